"""What statesaga/_machine.py relies on in ``transitions``, pinned.

``SagaMachine`` builds a ``transitions.Machine`` (``model=None``,
``auto_transitions=False``, ``State(name, final=...)``, conditions given by
model method name) and then reads its transition table directly instead of
calling ``Event.trigger``: ``Machine.events`` (trigger -> Event),
``Event.transitions`` (source -> list of Transition, in the order they are
tried), ``Transition.dest``, ``Transition.conditions``, ``Condition.func``
(the method name, unresolved) and ``Condition.target``. These are not
documented API, so pyproject caps ``transitions`` below the next minor; these
tests build a small machine directly and fail loudly if a release changes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from transitions import Machine, State

RELIES = "statesaga/_machine.py relies on this; check it before raising the transitions pin"


def contract(holds: bool, what: str) -> None:
    """Fail with ``what`` and the pin warning unless ``holds``."""
    assert holds, f"transitions contract broken: {what}. {RELIES}"


def build(model: Any = None) -> Machine:
    """A machine shaped like the ones SagaMachine builds."""
    return Machine(
        model=model,
        states=[State("a"), State("b"), State("done", final=True), State("bad", final=True)],
        transitions=[
            {"trigger": "go", "source": "a", "dest": "b"},
            {"trigger": "retry", "source": "a", "dest": "a"},
            # Order matters: the first whose conditions hold is taken.
            {"trigger": "finish", "source": "b", "dest": "bad", "conditions": "had_failed"},
            {"trigger": "finish", "source": "b", "dest": "done"},
            {"trigger": "finish", "source": "a", "dest": "done", "unless": "had_failed"},
        ],
        initial="a",
        auto_transitions=False,
        name="contract",
    )


@pytest.fixture
def machine() -> Machine:
    """A model-less machine, as SagaMachine keeps one per definition."""
    return build()


def test_events_map_each_trigger_to_its_event(machine: Machine) -> None:
    """``Machine.events`` is a mapping from trigger name to an event, holding only
    the declared triggers when ``auto_transitions=False``."""
    events = getattr(machine, "events", None)
    contract(isinstance(events, Mapping), f"Machine.events is not a mapping: {events!r}")
    assert isinstance(events, Mapping)
    contract(
        set(events) == {"go", "retry", "finish"},
        f"Machine.events keys are {sorted(events)}, not the declared triggers",
    )


def test_event_transitions_map_source_to_ordered_lists(machine: Machine) -> None:
    """``Event.transitions`` maps each source state's name to a list of its
    transitions, in declaration order (the order they are tried)."""
    finish = machine.events["finish"]
    table = getattr(finish, "transitions", None)
    contract(isinstance(table, Mapping), f"Event.transitions is not a mapping: {table!r}")
    assert isinstance(table, Mapping)
    contract(set(table) == {"a", "b"}, f"Event.transitions keys are {sorted(table)}")
    candidates = table["b"]
    contract(isinstance(candidates, list), f"Event.transitions[source] is {type(candidates)}")
    dests = [getattr(t, "dest", None) for t in candidates]
    contract(dests == ["bad", "done"], f"transitions from 'b' are {dests}, not in order")


def test_transition_dest_is_the_state_name(machine: Machine) -> None:
    """``Transition.dest`` is the destination state's name, also for a transition
    back to its own source."""
    (go,) = machine.events["go"].transitions["a"]
    (retry,) = machine.events["retry"].transitions["a"]
    contract(go.dest == "b" and str(go.dest) == "b", f"Transition.dest is {go.dest!r}")
    contract(retry.dest == "a", f"a reflexive Transition.dest is {retry.dest!r}")


def test_conditions_carry_method_name_and_target(machine: Machine) -> None:
    """``Transition.conditions`` is a list of conditions whose ``func`` is the model
    method's name as given and whose ``target`` is True for ``conditions``, False
    for ``unless``; an unconditional transition has none."""
    conditional, plain = machine.events["finish"].transitions["b"]
    (unless,) = machine.events["finish"].transitions["a"]
    contract(
        isinstance(plain.conditions, list) and not plain.conditions,
        f"an unconditional Transition.conditions is {plain.conditions!r}",
    )
    contract(len(conditional.conditions) == 1, f"conditions: {conditional.conditions!r}")
    (cond,) = conditional.conditions
    contract(cond.func == "had_failed", f"Condition.func is {cond.func!r}, not the method name")
    contract(cond.target is True, f"Condition.target for `conditions` is {cond.target!r}")
    (neg,) = unless.conditions
    contract(neg.func == "had_failed", f"Condition.func for `unless` is {neg.func!r}")
    contract(neg.target is False, f"Condition.target for `unless` is {neg.target!r}")


@pytest.mark.parametrize("had_failed", [True, False])
def test_table_order_is_the_order_trigger_tries(had_failed: bool) -> None:
    """Firing a trigger takes the first transition of ``Event.transitions[source]``
    whose conditions (``func`` called on the model == ``target``) hold: reading the
    table gives what ``Event.trigger`` does."""

    class Model:
        state: str

        def __init__(self) -> None:
            self.failed = had_failed

        def had_failed(self) -> bool:
            return self.failed

    model = Model()
    build(model)
    model.state = "b"
    expected = next(
        t.dest
        for t in build().events["finish"].transitions["b"]
        if all(bool(getattr(model, c.func)()) is c.target for c in t.conditions)
    )
    model.finish()  # type: ignore[attr-defined]
    contract(
        model.state == expected == ("bad" if had_failed else "done"),
        f"Event.trigger entered {model.state!r}; the table says {expected!r}",
    )
