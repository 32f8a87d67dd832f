"""A saga spec compiled into an explicit finite-state machine on ``transitions``.

One ``transitions.Machine`` is built per definition, never per saga. States:
one per step, one per compensation, and the terminals ``completed``,
``failed`` and (when the saga has compensations) ``compensation_failed``. Triggers:

- ``succeed``: a step moves to the next step (or ``completed``); a compensation
  moves to the next compensation down the chain (or a terminal);
- ``retry``: a failed attempt that its policy retries re-enters the same state;
- ``fail``: a step's final failure moves to the compensation of the closest
  completed step below it that has one (or ``failed``); a compensation's final
  failure is recorded and compensation goes on (ending ``compensation_failed``).

``transitions`` builds and validates the machine (``SagaMachine.fsm``). The
engine dispatches each trigger on the machine's own transition table — per
(state, trigger), its transitions in the order ``transitions`` tries them,
with their conditions — which is what ``Event.trigger`` does, without
building an ``EventData`` and resolving callbacks by name on every call (five
times the cost, and a saga fires N + 1 triggers per N steps). A test checks
that this dispatch and ``Event.trigger`` agree on every state, trigger and
condition. The saga being driven is a short-lived model object; it is never
added to the machine, so the machine stays shared and cheap.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import attrs
from transitions import Machine, State

from statesaga._definition import TERMINALS, SagaSpec
from statesaga._status import EntryStatus, SagaStatus

StateKind = Literal["step", "compensation", "terminal"]
TransitionKind = Literal[
    "forward", "complete", "retry", "fail", "compensate", "compensation_failed", "finish"
]


@attrs.frozen
class StateInfo:
    """One FSM state.

    Attributes:
        name: the state's name (the step's, the compensation's, or a terminal).
        kind: ``step``, ``compensation`` or ``terminal``.
        step: the step it runs or compensates (``None`` for terminals).
    """

    name: str
    kind: StateKind
    step: str | None


@attrs.frozen
class TransitionInfo:
    """One FSM transition.

    Attributes:
        trigger: ``succeed``, ``retry`` or ``fail``.
        source: the state it leaves.
        dest: the state it enters.
        kind: what it means in the saga (forward step, retry, failure, ...).
        condition: ``"compensation_failed"`` / ``"all_compensated"`` where the
            destination depends on whether any compensation failed, else ``None``.
    """

    trigger: str
    source: str
    dest: str
    kind: TransitionKind
    condition: str | None = None


@attrs.frozen
class Record:
    """What the log and the saga row record for one transition.

    Attributes:
        step: the step the left state runs or compensates.
        outcome: the log status of the attempt that ends (``completed``,
            ``failed``, ``compensated``, ``compensation_failed``).
        entered: the log status of the attempt that begins in the entered
            state (``executing``, ``compensating``), or ``None`` for a terminal.
        entered_step: the step that entered state runs or compensates.
        status: the saga's status once in the entered state.
    """

    step: str
    outcome: str
    entered: str | None
    entered_step: str | None
    status: str


class SagaModel(Protocol):
    """What the engine hands to ``SagaMachine.fire``."""

    state: str

    def on_transition(self, trigger: str, source: str, dest: str) -> None:
        """Persist the transition; raising aborts it (the state does not change)."""

    def compensation_had_failed(self) -> bool:
        """Whether some compensation of this saga failed for good."""


class InvalidTransition(RuntimeError):
    """The engine fired a trigger the current state does not accept (a bug)."""


class SagaMachine:
    """The state machine of one saga definition.

    Attributes:
        spec: the definition it was built from.
        states: every state, steps first, then compensations, then terminals.
        transitions: every transition.
        initial: the first step's state.
    """

    def __init__(self, spec: SagaSpec) -> None:
        self.spec = spec
        steps = spec.steps
        states = [StateInfo(s.name, "step", s.name) for s in steps]
        states += [
            StateInfo(s.compensation.name, "compensation", s.name)
            for s in reversed(steps)
            if s.compensation
        ]
        # compensation_failed only where some compensation exists to fail.
        any_compensation = any(s.compensation for s in steps)
        states += [
            StateInfo(t, "terminal", None)
            for t in TERMINALS
            if t != "compensation_failed" or any_compensation
        ]
        self.states: tuple[StateInfo, ...] = tuple(states)
        self._by_name = {st.name: st for st in self.states}
        self.initial = steps[0].name

        def compensation_below(index: int) -> str | None:
            """The compensation state of the closest step before ``index`` that has one."""
            for s in reversed(steps[:index]):
                if s.compensation:
                    return s.compensation.name
            return None

        ts: list[TransitionInfo] = []
        for s in steps:
            last = s.index == len(steps) - 1
            nxt = "completed" if last else steps[s.index + 1].name
            ts.append(TransitionInfo("succeed", s.name, nxt, "complete" if last else "forward"))
            ts.append(TransitionInfo("retry", s.name, s.name, "retry"))
            below = compensation_below(s.index)
            ts.append(TransitionInfo("fail", s.name, below or "failed", "fail"))
        for s in reversed(steps):
            if not s.compensation:
                continue
            c = s.compensation.name
            ts.append(TransitionInfo("retry", c, c, "retry"))
            below = compensation_below(s.index)
            if below:
                ts.append(TransitionInfo("succeed", c, below, "compensate"))
                ts.append(TransitionInfo("fail", c, below, "compensation_failed"))
            else:
                # Order matters: transitions tries them in turn and the first
                # whose condition holds wins.
                ts.append(
                    TransitionInfo(
                        "succeed", c, "compensation_failed", "finish", "compensation_failed"
                    )
                )
                ts.append(TransitionInfo("succeed", c, "failed", "finish", "all_compensated"))
                ts.append(TransitionInfo("fail", c, "compensation_failed", "compensation_failed"))
        self.transitions: tuple[TransitionInfo, ...] = tuple(ts)

        def as_dict(t: TransitionInfo) -> dict[str, Any]:
            d: dict[str, Any] = {"trigger": t.trigger, "source": t.source, "dest": t.dest}
            if t.condition == "compensation_failed":
                d["conditions"] = "compensation_had_failed"
            return d

        #: The ``transitions.Machine`` of this definition.
        self.fsm = Machine(
            model=None,
            states=[State(st.name, final=st.kind == "terminal") for st in self.states],
            transitions=[as_dict(t) for t in ts],
            initial=self.initial,
            auto_transitions=False,
            name=spec.key,
        )
        self._records = {(t.trigger, t.source, t.dest): self._record(t) for t in ts}
        # Per (source, trigger): the destinations in the order transitions tries
        # them, each with its conditions as (model method, expected truth).
        self._table: dict[tuple[str, str], tuple[tuple[str, tuple[tuple[str, bool], ...]], ...]]
        self._table = {}
        for trigger, event in self.fsm.events.items():
            for source, candidates in event.transitions.items():
                self._table[(source, trigger)] = tuple(
                    (str(t.dest), tuple((str(c.func), bool(c.target)) for c in t.conditions))
                    for t in candidates
                )

    def _record(self, t: TransitionInfo) -> Record:
        src, dst = self._by_name[t.source], self._by_name[t.dest]
        assert src.step is not None
        ok = t.trigger == "succeed"
        if src.kind == "step":
            outcome = EntryStatus.COMPLETED if ok else EntryStatus.FAILED
        else:
            outcome = EntryStatus.COMPENSATED if ok else EntryStatus.COMPENSATION_FAILED
        if dst.kind == "terminal":
            return Record(src.step, outcome.value, None, None, SagaStatus(dst.name).value)
        if dst.kind == "step":
            entered, status = EntryStatus.EXECUTING, SagaStatus.STARTED
        else:
            entered, status = EntryStatus.COMPENSATING, SagaStatus.COMPENSATING
        return Record(src.step, outcome.value, entered.value, dst.step, status.value)

    def record(self, trigger: str, source: str, dest: str) -> Record:
        """What the transition ``source --trigger--> dest`` writes to the log and row."""
        return self._records[(trigger, source, dest)]

    def state(self, name: str) -> StateInfo:
        """The state called ``name``; ``KeyError`` if the machine has none."""
        return self._by_name[name]

    def is_terminal(self, name: str) -> bool:
        """Whether ``name`` is one of the terminal states."""
        return name in TERMINALS

    def fire(self, model: SagaModel, trigger: str) -> str:
        """Fire ``trigger`` on ``model`` and return the state it entered.

        The first of the machine's transitions for the model's state and
        ``trigger`` whose conditions hold is taken: the model's
        ``on_transition(trigger, source, dest)`` runs before the state changes;
        if it raises, the model keeps its state and the error propagates.
        """
        source = model.state
        for dest, conditions in self._table.get((source, trigger), ()):
            if all(bool(getattr(model, name)()) is target for name, target in conditions):
                model.on_transition(trigger, source, dest)
                model.state = dest
                return dest
        raise InvalidTransition(f"{self.spec.key}: no {trigger!r} transition from {source}")
