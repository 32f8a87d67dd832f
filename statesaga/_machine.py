"""A saga spec compiled into an explicit finite-state machine on ``transitions``.

One ``transitions.Machine`` is built per definition, never per saga. States:
one per step, one per compensation, and the terminals ``completed``,
``failed`` and (when the saga has compensations) ``compensation_failed``. Triggers:

- ``succeed``: a step moves to the next step (or ``completed``); a compensation
  moves to the next compensation down the chain (or a terminal);
- ``retry``: a failed attempt that its policy retries re-enters the same state;
- ``fail``: a step's final failure moves to the compensation of the closest
  completed step below it that has one (or ``failed``); a compensation's final
  failure is recorded and compensation goes on (ending ``compensation_failed``);
- ``fail_in_doubt``: a step's final failure after its handler may have acted
  moves to the step's own compensation, which then goes on down the chain;
- ``expire``: a wait step's event did not come in time: a definite failure,
  to the same state ``fail`` leads to;
- the operator's ``cancel`` (a step's attempt does not run; the saga
  compensates as after a failure), ``resolve`` (``compensation_failed`` →
  ``resolved``) and ``retry_compensations`` (``compensation_failed`` back into
  the compensation its chain began with).

``transitions`` builds and validates the machine (``SagaMachine.fsm``). The
runner dispatches each trigger on the machine's own transition table — per
(state, trigger), its transitions in the order ``transitions`` tries them,
with their conditions — which is what ``Event.trigger`` does, without
building an ``EventData`` and resolving callbacks by name on every call (five
times the cost, and a saga fires N + 1 triggers per N steps). A test checks
that this dispatch and ``Event.trigger`` agree on every state, trigger and
condition. No saga is ever added to the machine as a model, so the machine
stays shared and cheap. This is the only module that imports ``transitions``.
"""

from __future__ import annotations

from typing import Any

import attrs
from transitions import Machine, State

from statesaga._errors import InvalidTransition
from statesaga._spec import TERMINALS, SagaSpec, StateKind, TransitionKind, status_of
from statesaga._status import SagaStatus

#: The one condition a transition may carry: the name of the model method
#: ``transitions`` is given for it.
COMPENSATION_HAD_FAILED = "compensation_had_failed"


@attrs.frozen
class StateInfo:
    """One FSM state.

    Attributes:
        name: the state's name (the step's, the compensation's, or a terminal).
        kind: ``step``, ``compensation`` or ``terminal``.
        step: the step it runs or compensates (``None`` for terminals).
        wait: for a wait step, the event it waits for.
    """

    name: str
    kind: StateKind
    step: str | None
    wait: str | None = None

    @property
    def status(self) -> SagaStatus:
        """The status of a saga in this state."""
        return status_of(self.kind, self.name)


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
        states = [
            StateInfo(s.name, "step", s.name, s.wait.event if s.wait else None) for s in steps
        ]
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
            if t not in ("compensation_failed", "resolved") or any_compensation
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
            ts.append(TransitionInfo("cancel", s.name, below or "failed", "cancel"))
            if s.wait is not None and s.wait.timeout is not None:
                ts.append(TransitionInfo("expire", s.name, below or "failed", "timeout"))
            if s.compensation:
                ts.append(TransitionInfo("fail_in_doubt", s.name, s.compensation.name, "in_doubt"))
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
        if any_compensation:
            # The operator's: close a saga handled by hand, or try its compensations
            # again from the one it started compensating with (whichever that was).
            ts.append(TransitionInfo("resolve", "compensation_failed", "resolved", "resolve"))
            ts.extend(
                TransitionInfo("retry_compensations", "compensation_failed", c, "redo")
                for c in (st.name for st in states if st.kind == "compensation")
            )
        self.transitions: tuple[TransitionInfo, ...] = tuple(ts)

        def as_dict(t: TransitionInfo) -> dict[str, Any]:
            d: dict[str, Any] = {"trigger": t.trigger, "source": t.source, "dest": t.dest}
            if t.condition == "compensation_failed":
                d["conditions"] = COMPENSATION_HAD_FAILED
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
        # Per (source, trigger): the destinations in the order transitions tries
        # them, each with the value COMPENSATION_HAD_FAILED must have (None: any).
        self._table: dict[tuple[str, str], tuple[tuple[str, bool | None], ...]] = {}
        for trigger, event in self.fsm.events.items():
            for source, candidates in event.transitions.items():
                self._table[(source, trigger)] = tuple(
                    (str(t.dest), _requirement(t.conditions)) for t in candidates
                )
        self._transitions = {(t.source, t.trigger, t.dest): t for t in ts}

    def __repr__(self) -> str:
        size = f"{len(self.states)} states, {len(self.transitions)} transitions"
        return f"<SagaMachine {self.spec.key}: {size}>"

    def state(self, name: str) -> StateInfo:
        """The state called ``name``; ``KeyError`` if the machine has none."""
        return self._by_name[name]

    def is_terminal(self, name: str) -> bool:
        """Whether ``name`` is one of the terminal states."""
        return name in TERMINALS

    def transition(self, source: str, trigger: str, dest: str) -> TransitionInfo:
        """The transition ``source --trigger--> dest``; ``KeyError`` if there is none."""
        return self._transitions[(source, trigger, dest)]

    def next_state(self, source: str, trigger: str, compensation_had_failed: bool) -> str:
        """The state ``trigger`` leads to from ``source``: the first of the machine's
        transitions for them whose condition holds, as ``Event.trigger`` picks it.

        Raises:
            InvalidTransition: ``source`` has no such transition.
        """
        for dest, required in self._table.get((source, trigger), ()):
            if required is None or required is compensation_had_failed:
                return dest
        raise InvalidTransition(self.spec.key, source, trigger)


def _requirement(conditions: list[Any]) -> bool | None:
    """What a transition's conditions ask of COMPENSATION_HAD_FAILED (None: nothing)."""
    required: bool | None = None
    for c in conditions:
        if str(c.func) != COMPENSATION_HAD_FAILED:  # pragma: no cover - built above
            raise AssertionError(f"unexpected condition {c.func!r}")
        required = bool(c.target)
    return required
