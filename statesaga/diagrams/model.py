"""The graph model: a saga definition as plain nodes and edges, renderer-neutral.

Nodes and edges carry the machine's own kinds (``StateKind``,
``TransitionKind``). ``build_model`` (in ``extract``) fills the model in from a
definition; ``GraphModel.with_path`` lays one saga's log over it, as read by
``overlay``. Renderers (``to_dot``, ``to_mermaid``) read the model and nothing else.
"""

from __future__ import annotations

import datetime
import textwrap
from collections.abc import Sequence

import attrs

from statesaga._machine import SagaMachine
from statesaga._replay import Entry
from statesaga._spec import StateKind, TransitionKind
from statesaga.diagrams.overlay import NodeOutcome, read_log

#: The note on a step that has no compensation (it is skipped when the saga compensates).
NO_COMPENSATION = "no compensation"


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
        wait: for a wait step, the event it waits for (its ``timeout`` is how
            long it waits).
        outcome: overlay only: what became of the state, ``None`` if the saga
            never entered it.
        attempts: overlay only: attempts made in this state (entries that entered it).
        error: overlay only: the error of its last failed attempt.
        since: overlay only: when the saga parked at this wait step, if it waits.
    """

    id: str
    kind: StateKind
    step: str | None
    index: int | None
    max_attempts: int
    transactional: bool = False
    timeout: float | None = None
    compensation: str | None = None
    wait: str | None = None
    outcome: NodeOutcome | None = None
    attempts: int = 0
    error: str | None = None
    since: float | None = None

    @property
    def details(self) -> tuple[str, ...]:
        """What a drawing says under the state's name, one line each: its
        position or the step it undoes, and its options; for a step without
        compensation, a second line saying so (empty for terminals)."""
        if self.kind == "terminal":
            return ()
        parts = [f"step {(self.index or 0) + 1}" if self.kind == "step" else f"undoes {self.step}"]
        if self.wait is not None:
            parts.append(f"waits for {self.wait}")
        if self.transactional and self.wait is None:
            parts.append("transactional")
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout:g}s")
        if self.max_attempts > 1:
            parts.append(f"up to {self.max_attempts} attempts")
        lines = [" · ".join(parts)]
        if self.kind == "step" and self.compensation is None:
            lines.append(NO_COMPENSATION)
        return tuple(lines)

    @property
    def error_lines(self) -> tuple[str, ...]:
        """Overlay only: the error a drawing shows in the state (that of a
        failure, or of the running state's last attempt), wrapped; else none."""
        if not self.error or self.outcome not in ("failed", "compensation_failed", "running"):
            return ()
        return tuple(textwrap.wrap(self.error, 34, max_lines=3, placeholder=" …"))

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
        if self.outcome == "waiting":
            at = datetime.datetime.fromtimestamp(self.since or 0, datetime.UTC)
            return f"waiting since {at:%Y-%m-%d %H:%M:%S} UTC"
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
    kind: TransitionKind
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
    kind: TransitionKind
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
        machine: the state machine drawn, which reads a saga's log for
            ``with_path`` (not part of the model's value: no renderer reads it).
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
    machine: SagaMachine = attrs.field(eq=False, repr=False)
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
    def run_summary(self) -> str | None:
        """Overlay only: ``saga ID: STATUS after N transitions``."""
        if not self.is_instance:
            return None
        return (
            f"saga {self.saga_id or 'one saga'}: {self.status} after {len(self.path)} transitions"
        )

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
        history: Sequence[Entry],
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
            HistoryMismatch: the log is not a path of this definition's machine,
                or it ends in a state whose status is not ``status``.
        """
        seen = read_log(self.machine, history, status, error)
        path = tuple(
            PathStep(i, m.source, m.dest, m.kind, m.attempt, m.error)
            for i, m in enumerate(seen.moves, 1)
        )

        def taken(e: Edge) -> tuple[int, ...]:
            return tuple(
                p.number for p in path if (p.source, p.dest, p.kind) == (e.source, e.dest, e.kind)
            )

        nodes = tuple(
            attrs.evolve(
                n,
                outcome=seen.outcomes.get(n.id),
                attempts=seen.attempts.get(n.id, 0),
                error=seen.errors.get(n.id),
                since=seen.waiting_since if n.id == seen.current else None,
            )
            for n in self.nodes
        )
        return attrs.evolve(
            self,
            nodes=nodes,
            edges=tuple(attrs.evolve(e, taken=taken(e)) for e in self.edges),
            saga_id=saga_id,
            status=seen.status,
            path=path,
            current=seen.current,
            error=seen.error,
        )
