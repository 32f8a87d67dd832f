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

The saga being driven is a short-lived model object handed to each trigger;
it is never added to the machine, so the machine stays shared and cheap.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import attrs
from transitions import Machine, State

from statesaga.definition import TERMINALS, SagaSpec

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


class SagaModel(Protocol):
    """What the engine hands to ``SagaMachine.fire``."""

    state: str

    def on_transition(self, event: Any) -> None:
        """Persist the transition; raising aborts it (the state does not change)."""

    def compensation_had_failed(self, event: Any) -> bool:
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

        self._machine = Machine(
            model=None,
            states=[State(st.name, final=st.kind == "terminal") for st in self.states],
            transitions=[as_dict(t) for t in ts],
            initial=self.initial,
            auto_transitions=False,
            send_event=True,
            before_state_change="on_transition",
            name=spec.key,
        )
        self._events = {name: self._machine.events[name] for name in ("succeed", "retry", "fail")}

    def state(self, name: str) -> StateInfo:
        """The state called ``name``; ``KeyError`` if the machine has none."""
        return self._by_name[name]

    def is_terminal(self, name: str) -> bool:
        """Whether ``name`` is one of the terminal states."""
        return name in TERMINALS

    def fire(self, model: SagaModel, trigger: str) -> str:
        """Fire ``trigger`` on ``model`` and return the state it entered.

        The model's ``on_transition`` runs before the state changes; if it
        raises, the model keeps its state and the error propagates.
        """
        if not self._events[trigger].trigger(model):
            raise InvalidTransition(
                f"{self.spec.key}: no {trigger!r} transition from {model.state}"
            )
        return model.state
