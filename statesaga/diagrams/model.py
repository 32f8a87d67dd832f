"""The graph model: a saga definition as plain nodes and edges, renderer-neutral.

``build_model`` extracts it from a definition's ``SagaSpec`` and
``SagaMachine`` (one node per FSM state, one edge per FSM transition), and
``GraphModel.with_path`` lays one saga's log over it: the transitions it took,
numbered in order, and what became of each state. Renderers (``to_dot``,
``to_mermaid``) read the model and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from statesaga._errors import HistoryMismatch
from statesaga._spec import TERMINALS, SagaSpec

if TYPE_CHECKING:
    from statesaga._definition import Saga
    from statesaga._machine import SagaMachine

NodeKind = Literal["step", "compensation", "terminal"]
EdgeKind = Literal[
    "forward", "complete", "retry", "fail", "compensate", "compensation_failed", "finish"
]
#: What an instance overlay says became of a state:
#:
#: - ``completed``: a step that completed (and was not compensated);
#: - ``failed``: the step whose final failure made the saga compensate;
#: - ``compensated``: a step whose compensation ran, or a compensation that ran;
#: - ``compensation_failed``: a compensation that failed for good, or its step;
#: - ``running``: the state the saga is in now (it is not finished);
#: - ``reached``: the terminal the saga ended in.
NodeOutcome = Literal[
    "completed", "failed", "compensated", "compensation_failed", "running", "reached"
]

_ENTERED = ("executing", "compensating")
_SUCCEEDED = ("completed", "compensated")
_FAILED = ("failed", "compensation_failed")


class HistoryEntry(Protocol):
    """What the overlay reads of a saga log entry (``statesaga.LogEntry`` fits)."""

    @property
    def step(self) -> str:
        """The step the entry concerns (compensation entries name their step)."""

    @property
    def status(self) -> str:
        """``executing``, ``completed``, ``failed``, ``compensating``, ``compensated``
        or ``compensation_failed``."""

    @property
    def attempt(self) -> int:
        """The attempt number."""

    @property
    def error(self) -> str | None:
        """The error of a failed attempt."""


@attrs.frozen
class Node:
    """One FSM state.

    Attributes:
        id: the state's name, unique in the model.
        kind: ``step``, ``compensation`` or ``terminal``.
        step: the step it runs or compensates (``None`` for terminals).
        index: that step's position from 0 (``None`` for terminals).
        max_attempts: attempts its retry policy allows (1: no retry; 0 for terminals).
        transactional: a step or compensation that commits with its transition.
        timeout: a step's timeout in seconds, or ``None``.
        compensation: for a step, the compensation state that undoes it, or
            ``None`` when it has none (it is skipped when the saga compensates).
        outcome: overlay only: what became of the state, ``None`` if the saga
            never entered it.
        attempts: overlay only: attempts made in this state (entries that entered it).
        error: overlay only: the error of its last failed attempt.
    """

    id: str
    kind: NodeKind
    step: str | None
    index: int | None
    max_attempts: int
    transactional: bool = False
    timeout: float | None = None
    compensation: str | None = None
    outcome: NodeOutcome | None = None
    attempts: int = 0
    error: str | None = None

    @property
    def outcome_text(self) -> str | None:
        """Overlay only: what became of the state, in a few words."""
        n = self.attempts
        if self.outcome is None:
            return None
        if self.outcome == "running":
            return f"running now, attempt {n}" if n > 1 else "running now"
        if self.outcome == "reached":
            return "reached"
        on = f" on attempt {n}" if n > 1 else ""
        after = f" after {n} attempts" if n > 1 else ""
        if self.kind == "compensation":
            return f"compensated{on}" if self.outcome == "compensated" else f"failed{after}"
        return {
            "completed": f"completed{on}",
            "failed": f"failed{after}",
            "compensated": f"completed{on}, then undone",
            "compensation_failed": f"completed{on}, undo failed",
        }[self.outcome]

    @property
    def compensable(self) -> bool:
        """Whether this is a step with a compensation."""
        return self.kind == "step" and self.compensation is not None


@attrs.frozen
class Edge:
    """One FSM transition.

    Attributes:
        source: the state it leaves.
        dest: the state it enters.
        kind: ``forward`` (to the next step), ``complete`` (last step to
            ``completed``), ``retry`` (a loop), ``fail`` (a step's final failure,
            to the compensation chain), ``compensate`` (a compensation done, to the
            next), ``compensation_failed`` (a compensation failed for good; the
            chain goes on) or ``finish`` (the chain's end, to a terminal).
        trigger: ``succeed``, ``retry`` or ``fail``.
        condition: ``all_compensated`` / ``compensation_failed`` on the two
            ``finish`` edges of a successful last compensation, else ``None``.
        label: a short text for renderers (``None``: draw it unlabelled).
        possible: ``False`` for the retry loop of a state whose policy allows one
            attempt: the machine has it, but it is never taken, so renderers
            leave it out.
        taken: overlay only: the positions (from 1) in the saga's path at which
            it took this transition; empty if it never did.
    """

    source: str
    dest: str
    kind: EdgeKind
    trigger: str
    condition: str | None = None
    label: str | None = None
    possible: bool = True
    taken: tuple[int, ...] = ()


@attrs.frozen
class PathStep:
    """One transition a saga took, in an instance overlay.

    Attributes:
        number: its position in the path, from 1.
        source: the state it left.
        dest: the state it entered.
        kind: the edge's kind.
        attempt: the attempt of ``source`` that ended with this transition.
        error: that attempt's error, if it failed.
    """

    number: int
    source: str
    dest: str
    kind: EdgeKind
    attempt: int
    error: str | None = None


@attrs.frozen
class GraphModel:
    """A saga definition as a graph, optionally with one saga's path laid over it.

    Attributes:
        name: the definition's name.
        version: its version.
        fingerprint: its structural fingerprint.
        deadline: seconds from the start after which no further step starts, or ``None``.
        initial: the first state (the first step).
        nodes: one per FSM state: steps in order, compensations in the order they
            run (last step's first), then the terminals ``completed``, ``failed``
            and ``compensation_failed``.
        edges: one per FSM transition, in the machine's order.
        saga_id: overlay only: the saga drawn.
        status: overlay only: its status (``started``, ``compensating``,
            ``completed``, ``failed``, ``compensation_failed``).
        path: overlay only: the transitions it took, in order.
        current: overlay only: the state it is in, if it has not finished.
        error: overlay only: the error that made it compensate.
    """

    name: str
    version: int
    fingerprint: str
    deadline: float | None
    initial: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    saga_id: str | None = None
    status: str | None = None
    path: tuple[PathStep, ...] = ()
    current: str | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        """``name@vversion``."""
        return f"{self.name}@v{self.version}"

    @property
    def is_instance(self) -> bool:
        """Whether an instance overlay is laid over the definition."""
        return self.status is not None

    def node(self, id: str) -> Node:
        """The node of state ``id``; ``KeyError`` if there is none."""
        for n in self.nodes:
            if n.id == id:
                return n
        raise KeyError(id)

    @property
    def steps(self) -> tuple[Node, ...]:
        """The step nodes, in execution order."""
        return tuple(n for n in self.nodes if n.kind == "step")

    @property
    def compensations(self) -> tuple[Node, ...]:
        """The compensation nodes, in the order they run (the compensation chain)."""
        return tuple(n for n in self.nodes if n.kind == "compensation")

    @property
    def terminals(self) -> tuple[Node, ...]:
        """The terminal nodes: ``completed``, ``failed``, ``compensation_failed``."""
        return tuple(n for n in self.nodes if n.kind == "terminal")

    @property
    def forward_path(self) -> tuple[str, ...]:
        """The states of a saga where everything succeeds: every step, then ``completed``."""
        return (*(n.id for n in self.steps), "completed")

    def edges_from(self, id: str) -> tuple[Edge, ...]:
        """The edges leaving state ``id``."""
        return tuple(e for e in self.edges if e.source == id)

    @property
    def drawn_edges(self) -> tuple[Edge, ...]:
        """The edges renderers draw: those that can be taken (or were)."""
        return tuple(e for e in self.edges if e.possible or e.taken)

    @property
    def visited(self) -> tuple[str, ...]:
        """Overlay only: the states the saga entered, in order, a retried state
        once per attempt (empty for a bare definition)."""
        if not self.is_instance:
            return ()
        if not self.path:
            return (self.initial,) if self.current else ()
        return (self.path[0].source, *(p.dest for p in self.path))

    def with_path(
        self,
        history: Sequence[HistoryEntry],
        status: str | None = None,
        *,
        saga_id: str | None = None,
        error: str | None = None,
    ) -> GraphModel:
        """This definition with one saga's path laid over it.

        Args:
            history: the saga's log, oldest first (``engine.history(saga_id)``).
            status: the saga's status (``engine.get(saga_id).status``); if
                omitted it is read off the log.
            saga_id: the saga's id, for the title.
            error: the error that made it compensate (``SagaRun.error``); if
                omitted, the error of the step that failed.

        Returns:
            A new model whose edges carry the path positions at which they were
            taken, whose nodes say what became of each state, and whose
            ``current`` names the state of a saga still running.

        Raises:
            HistoryMismatch: the log names states or moves this definition
                does not have.
        """
        return _overlay(self, history, status, saga_id, error)


def model_of(saga: type[Saga]) -> GraphModel:
    """The graph model of a saga class (``build_model(cls.spec, cls.machine)``)."""
    return build_model(saga.spec, saga.machine)


def build_model(spec: SagaSpec, machine: SagaMachine) -> GraphModel:
    """Extract the graph model of a definition from its spec and state machine.

    Args:
        spec: the definition's frozen spec.
        machine: the state machine compiled from it.

    Returns:
        One node per state of ``machine`` and one edge per transition, with
        each step's retry policy, transactionality and compensation from ``spec``.
    """
    nodes = []
    attempts: dict[str, int] = {}
    for st in machine.states:
        if st.kind == "terminal":
            nodes.append(Node(st.name, "terminal", None, None, 0))
            continue
        assert st.step is not None
        s = spec.step(st.step)
        if st.kind == "step":
            node = Node(
                st.name,
                "step",
                s.name,
                s.index,
                s.retry.max_attempts,
                transactional=s.transactional,
                timeout=s.timeout,
                compensation=s.compensation.name if s.compensation else None,
            )
        else:
            assert s.compensation is not None
            node = Node(
                st.name,
                "compensation",
                s.name,
                s.index,
                s.compensation.retry.max_attempts,
                transactional=s.compensation.transactional,
            )
        attempts[st.name] = node.max_attempts
        nodes.append(node)
    edges = tuple(
        Edge(
            t.source,
            t.dest,
            t.kind,
            t.trigger,
            t.condition,
            _label(t.kind, t.condition, attempts.get(t.source, 0), t.dest in TERMINALS),
            possible=t.kind != "retry" or attempts.get(t.source, 0) > 1,
        )
        for t in machine.transitions
    )
    return GraphModel(
        name=spec.name,
        version=spec.version,
        fingerprint=spec.fingerprint,
        deadline=spec.deadline,
        initial=machine.initial,
        nodes=tuple(nodes),
        edges=edges,
    )


def _label(kind: str, condition: str | None, max_attempts: int, terminal: bool) -> str | None:
    if kind == "retry":
        return f"retry (≤ {max_attempts} attempts)"
    if kind == "fail":
        return "fail"
    if kind == "compensation_failed":
        return "fail" if terminal else "fail, go on"
    if kind == "finish":
        return "a compensation failed" if condition == "compensation_failed" else "all undone"
    return None


def _overlay(
    model: GraphModel,
    history: Sequence[HistoryEntry],
    status: str | None,
    saga_id: str | None,
    error: str | None,
) -> GraphModel:
    """Replay ``history`` over ``model``'s states; see ``GraphModel.with_path``."""
    key = model.key
    comp_of = {n.step: n.id for n in model.compensations}
    edges = {(e.source, e.dest, e.trigger): e for e in model.edges}
    entered_count: dict[str, int] = {}
    errors: dict[str, str] = {}
    path: list[PathStep] = []
    state: str | None = None  # the state entered last
    left: tuple[str, str, HistoryEntry] | None = None  # (state, trigger, its outcome entry)
    gave_up: set[str] = set()  # states that failed for good
    succeeded: set[str] = set()

    def take(source: str, dest: str, trigger: str, entry: HistoryEntry) -> None:
        edge = edges.get((source, dest, trigger))
        if edge is None:
            raise HistoryMismatch(key, f"it has no {trigger!r} transition {source} -> {dest}")
        failed = entry.status in _FAILED
        path.append(
            PathStep(
                len(path) + 1,
                source,
                dest,
                edge.kind,
                entry.attempt,
                entry.error if failed else None,
            )
        )

    for i, entry in enumerate(history, 1):
        status_ = str(entry.status)
        if status_ in _ENTERED:
            if status_ == "executing":
                target = entry.step
                if target not in {n.id for n in model.steps}:
                    raise HistoryMismatch(key, f"entry {i} runs {target!r}, which is not a step")
            else:
                target = comp_of.get(entry.step, "")
                if not target:
                    raise HistoryMismatch(
                        key, f"entry {i} compensates {entry.step!r}, which has no compensation"
                    )
            if left is not None:
                source, trigger, outcome = left
                if trigger == "fail" and target == source:
                    trigger = "retry"
                elif trigger == "fail":
                    gave_up.add(source)
                take(source, target, trigger, outcome)
                left = None
            elif state is None and target != model.initial:
                raise HistoryMismatch(key, f"entry {i} starts at {target!r}, not {model.initial!r}")
            elif state is not None and state != target:
                raise HistoryMismatch(
                    key, f"entry {i} enters {target!r} while {state!r} had no outcome"
                )
            # The same state entered again without an outcome: a resume after a crash.
            state = target
            entered_count[target] = entered_count.get(target, 0) + 1
        elif status_ in (*_SUCCEEDED, *_FAILED):
            expected = "executing" if status_ in ("completed", "failed") else "compensating"
            owner = entry.step if expected == "executing" else comp_of.get(entry.step)
            if state is None or left is not None or owner != state:
                raise HistoryMismatch(
                    key, f"entry {i} ({entry.step} {status_}) does not follow its {expected} entry"
                )
            if status_ in _FAILED and entry.error:
                errors[state] = entry.error
            if status_ in _SUCCEEDED:
                succeeded.add(state)
            left = (state, "succeed" if status_ in _SUCCEEDED else "fail", entry)
        else:
            raise HistoryMismatch(key, f"entry {i} has an unknown status {status_!r}")

    current: str | None = None
    wanted = str(status) if status is not None else None
    if left is not None:
        source, trigger, outcome = left
        if trigger == "fail":
            gave_up.add(source)
        candidates = [
            e.dest
            for e in model.edges
            if e.source == source and e.trigger == trigger and e.dest in TERMINALS
        ]
        if not candidates:
            raise HistoryMismatch(
                key, f"the log ends as {source!r} is left, but no terminal follows it"
            )
        comp_failed = any(model.node(s).kind == "compensation" for s in gave_up)
        if wanted in candidates:
            dest = wanted
        elif len(candidates) == 1:
            dest = candidates[0]
        else:
            dest = "compensation_failed" if comp_failed else "failed"
        take(source, dest, trigger, outcome)
        if wanted is not None and wanted != dest:
            raise HistoryMismatch(key, f"the saga is {wanted} but its log ends in {dest!r}")
        final = dest
    else:
        # No entry at all: recorded by ``engine.start`` but never run yet.
        current = final = state if state is not None else model.initial
        if wanted in TERMINALS:
            raise HistoryMismatch(key, f"the saga is {wanted} but its log stops in {current!r}")

    taken: dict[tuple[str, str, str], list[int]] = {}
    for p in path:
        taken.setdefault((p.source, p.dest, p.kind), []).append(p.number)
    new_edges = tuple(
        attrs.evolve(e, taken=tuple(taken.get((e.source, e.dest, e.kind), ()))) for e in model.edges
    )
    new_nodes = []
    for n in model.nodes:
        became: NodeOutcome | None = None
        if n.id == current:
            became = "running"
        elif n.kind == "terminal":
            became = "reached" if n.id == final else None
        elif n.kind == "compensation":
            if n.id in succeeded:
                became = "compensated"
            elif n.id in gave_up:
                became = "compensation_failed"
        elif n.id in gave_up:
            became = "failed"
        elif n.id in succeeded:
            became = "completed"
            if n.compensation in succeeded:
                became = "compensated"
            elif n.compensation in gave_up:
                became = "compensation_failed"
        new_nodes.append(
            attrs.evolve(
                n, outcome=became, attempts=entered_count.get(n.id, 0), error=errors.get(n.id)
            )
        )
    if error is None:
        failed = [n for n in new_nodes if n.outcome == "failed"]
        error = failed[0].error if failed else None
    if wanted is None:
        wanted = final if final in TERMINALS else _running_status(model, final)
    return attrs.evolve(
        model,
        nodes=tuple(new_nodes),
        edges=new_edges,
        saga_id=saga_id,
        status=wanted,
        path=tuple(path),
        current=current,
        error=error,
    )


def _running_status(model: GraphModel, state: str) -> str:
    return "compensating" if model.node(state).kind == "compensation" else "started"
