"""Saga classes compile to a frozen spec and a state machine, or fail at class creation."""

from __future__ import annotations

import inspect
import re

import attrs
import pytest

from definitions.order import OrderSaga
from statesaga import InvalidDefinition, InvalidTransition, Retry, Saga, step


def test_order_saga_compiles_to_spec() -> None:
    """Steps keep their declared order; compensations attach to their steps."""
    spec = OrderSaga.spec
    assert spec.name == "order" and spec.version == 1
    assert [s.name for s in spec.steps] == [
        "create_order",
        "charge_payment",
        "reserve_inventory",
        "confirm_order",
    ]
    comps = {s.name: s.compensation.name if s.compensation else None for s in spec.steps}
    assert comps == {
        "create_order": "cancel_order",
        "charge_payment": "refund_payment",
        "reserve_inventory": "release_reservation",
        "confirm_order": None,
    }
    assert spec.step("charge_payment").retry.max_attempts == 3
    assert spec.step("create_order").retry.max_attempts == 1
    assert spec.step("create_order").result_type is str
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]


def test_machine_states_and_transitions_are_inspectable() -> None:
    """One state per step and compensation plus the terminals; failures enter the
    compensation of the closest completed step below, compensation runs downwards."""
    m = OrderSaga.machine
    assert [(s.name, s.kind) for s in m.states] == [
        ("create_order", "step"),
        ("charge_payment", "step"),
        ("reserve_inventory", "step"),
        ("confirm_order", "step"),
        ("release_reservation", "compensation"),
        ("refund_payment", "compensation"),
        ("cancel_order", "compensation"),
        ("completed", "terminal"),
        ("failed", "terminal"),
        ("compensation_failed", "terminal"),
        ("resolved", "terminal"),
    ]
    edges = {(t.trigger, t.source, t.dest) for t in m.transitions}
    assert ("succeed", "confirm_order", "completed") in edges
    assert ("fail", "create_order", "failed") in edges
    assert ("fail", "charge_payment", "cancel_order") in edges
    assert ("fail", "confirm_order", "release_reservation") in edges
    assert ("succeed", "release_reservation", "refund_payment") in edges
    assert ("fail", "refund_payment", "cancel_order") in edges
    assert ("succeed", "cancel_order", "failed") in edges
    assert ("succeed", "cancel_order", "compensation_failed") in edges
    assert ("fail", "cancel_order", "compensation_failed") in edges
    assert all(("retry", s.name, s.name) in edges for s in m.states if s.kind != "terminal")
    # A step with a compensation that fails in doubt enters that compensation first.
    assert ("fail_in_doubt", "charge_payment", "refund_payment") in edges
    assert not any(t == "fail_in_doubt" and s == "confirm_order" for t, s, _ in edges)
    # The operator's: cancel from each step (where its failure leads), resolve a
    # compensation_failed saga, or take it back into any compensation.
    assert ("cancel", "charge_payment", "cancel_order") in edges
    assert ("resolve", "compensation_failed", "resolved") in edges
    assert ("retry_compensations", "compensation_failed", "refund_payment") in edges
    assert len(edges) == len(m.transitions) == 25 + 4 + 1 + 3


def test_machine_without_compensations_has_no_compensation_failed_state() -> None:
    """A saga without compensations cannot end compensation_failed: no such state."""

    class Plain(Saga):
        @step
        def one(self, ctx): ...

        @step
        def two(self, ctx): ...

    assert [s.name for s in Plain.machine.states] == ["one", "two", "completed", "failed"]


def test_one_machine_per_definition() -> None:
    """The machine is built once, with the class, and shared by every saga."""
    assert OrderSaga.machine is OrderSaga.machine
    assert OrderSaga().machine is OrderSaga.machine


def test_fingerprint_follows_structure() -> None:
    """Same structure gives the same fingerprint; another step changes it."""

    class A(Saga):
        name = "fp"

        @step
        def one(self, ctx): ...

    class B(Saga):
        name = "fp"

        @step
        def one(self, ctx): ...

    class C(Saga):
        name = "fp"

        @step
        def one(self, ctx): ...

        @step
        def two(self, ctx): ...

    assert A.spec.fingerprint == B.spec.fingerprint != C.spec.fingerprint


def _raises(match: str):
    return pytest.raises(InvalidDefinition, match=re.escape(match))


def test_no_steps() -> None:
    """A saga without steps says to add one."""
    with _raises("declares no steps; decorate at least one method with @step"):

        class Empty(Saga):
            pass


def test_abstract_base_needs_no_steps() -> None:
    """An abstract base class is not compiled."""

    class Base(Saga, abstract=True):
        pass

    assert "spec" not in Base.__dict__


def test_duplicate_step_names() -> None:
    """A step name declared twice in one class body is caught, naming both lines
    (the second would otherwise silently replace the first, as enum guards against)."""
    with pytest.raises(InvalidDefinition, match="'pay' is declared twice in the class body") as e:

        class Twice(Saga):
            @step
            def pay(self, ctx): ...

            @step
            def pay(self, ctx): ...  # noqa: F811

            @step
            def ship(self, ctx): ...

    lines, start = inspect.getsourcelines(test_duplicate_step_names)
    decorators = [start + n for n, text in enumerate(lines) if text.strip() == "@step"]
    said = re.search(r"the step at line (\d+), then again at line (\d+)", str(e.value))
    assert said is not None
    assert [int(said[1]), int(said[2])] == decorators[:2]


def test_step_replaced_by_plain_method_in_same_body() -> None:
    """A plain method that reuses a step's name in the same class body would drop
    the step silently; it is rejected (overriding in a subclass stays allowed)."""
    with _raises("'pay' is declared twice in the class body"):

        class Replaced(Saga):
            @step
            def pay(self, ctx): ...

            @step
            def ship(self, ctx): ...

            def pay(self, ctx): ...  # noqa: F811


def test_compensation_for_unknown_step() -> None:
    """A compensation of a step from another saga is rejected where it is declared."""

    class Other(Saga):
        @step
        def foreign(self, ctx): ...

    with _raises("compensation 'undo_foreign' is declared for step 'foreign' outside the class"):

        class Mine(Saga):
            @step
            def local(self, ctx): ...

            @Other.foreign.compensate
            def undo_foreign(self, ctx, result): ...


def test_subclass_overrides_handlers_by_name() -> None:
    """A plain method overriding an inherited step or compensation replaces its
    handler and keeps its options; with the same result types, the structure (and
    fingerprint) is unchanged."""
    from definitions.order import OrderSaga

    class Quiet(OrderSaga):
        name = "order"

        def charge_payment(self, ctx) -> str:  # type: ignore[override]
            return "free"

        def refund_payment(self, ctx, payment_id) -> None:  # type: ignore[override]
            return None

    step_ = Quiet.spec.step("charge_payment")
    assert step_.handler is Quiet.__dict__["charge_payment"]
    assert step_.retry == OrderSaga.spec.step("charge_payment").retry
    assert step_.compensation is not None
    assert step_.compensation.handler is Quiet.__dict__["refund_payment"]
    assert Quiet.spec.fingerprint == OrderSaga.spec.fingerprint


def test_compensation_defined_twice() -> None:
    """Two compensations for one step are rejected, naming both."""
    with _raises("step 'pay' has two compensations ('refund' and 'refund_again')"):

        class Twice(Saga):
            @step
            def pay(self, ctx): ...

            @pay.compensate
            def refund(self, ctx, result): ...

            @pay.compensate
            def refund_again(self, ctx, result): ...


def test_same_compensation_name_twice() -> None:
    """A compensation redefined under the same name is rejected."""
    with _raises("'refund' is declared twice in the class body (the compensation at line"):

        class Twice(Saga):
            @step
            def pay(self, ctx): ...

            @pay.compensate
            def refund(self, ctx, result): ...

            @pay.compensate
            def refund(self, ctx, result): ...  # noqa: F811


def test_compensation_of_the_last_step_is_reached_only_in_doubt() -> None:
    """The last step may have a compensation: the only way into it is the last
    step failing in doubt (its success completes the saga)."""

    class Ship(Saga):
        @step
        def pack(self, ctx): ...

        @step
        def ship(self, ctx): ...

        @ship.compensate
        def unship(self, ctx, result): ...

    into = {
        (t.trigger, t.source)
        for t in Ship.machine.transitions
        if t.dest == "unship" and t.source not in ("unship", "compensation_failed")
    }
    assert into == {("fail_in_doubt", "ship")}


def test_compensation_name_clashes_with_step() -> None:
    """Step and compensation names share one namespace (they are FSM states)."""
    with _raises("'pay' is declared twice"):

        class Clash(Saga):
            @step
            def pay(self, ctx): ...

            @step
            def ship(self, ctx): ...

            @ship.compensate
            def pay(self, ctx, result): ...  # noqa: F811


@pytest.mark.parametrize(
    "name", ["completed", "failed", "compensation_failed", "succeed", "retry", "fail", "state"]
)
def test_reserved_step_names(name: str) -> None:
    """Names the state machine uses cannot be step names."""
    body = {}
    exec(f"def {name}(self, ctx): ...", body)
    with _raises(f"step {name!r} clashes with a name the state machine reserves"):
        type("Reserved", (Saga,), {name: step(body[name])})


def test_step_signature() -> None:
    """A step must take (self, ctx)."""
    with _raises("step 'pay' must take (self, ctx), but its signature is pay(self)"):

        class Bad(Saga):
            @step
            def pay(self): ...


def test_compensation_signature() -> None:
    """A compensation must take (self, ctx, result)."""
    with _raises("compensation 'refund' must take (self, ctx, result)"):

        class Bad(Saga):
            @step
            def pay(self, ctx): ...

            @pay.compensate
            def refund(self, ctx): ...

            @step
            def ship(self, ctx): ...


def test_bad_version_and_input_type() -> None:
    """Version must be a positive int and input_type a class."""
    with _raises("version must be an integer >= 1, got 0"):

        class V0(Saga):
            version = 0

            @step
            def a(self, ctx): ...

    with _raises("input_type must be a class"):

        class NotAType(Saga):
            input_type = "OrderRequest"  # type: ignore[assignment]

            @step
            def a(self, ctx): ...


def test_retry_policy_validation_and_delays() -> None:
    """Retry rejects nonsense and computes capped exponential delays."""
    with pytest.raises(ValueError, match="max_attempts must be > 0"):
        Retry(max_attempts=0)
    with pytest.raises(TypeError, match="retry_on takes exception classes"):
        Retry(retry_on="ValueError")  # type: ignore[arg-type]
    r = Retry(max_attempts=5, initial_delay=1.0, multiplier=3.0, max_delay=5.0, retry_on=KeyError)
    assert [r.delay(n) for n in (1, 2, 3)] == [1.0, 3.0, 5.0]
    assert r.should_retry(KeyError("x"), 1) and not r.should_retry(ValueError(), 1)
    assert not r.should_retry(KeyError("x"), 5)


def test_dispatch_agrees_with_transitions_event_trigger() -> None:
    """SagaMachine.next_state picks, for every state, trigger and condition value, the
    same transition as transitions' own Event.trigger on the same machine."""
    import transitions

    from definitions.transfer import TransferSaga
    from definitions.trip import TripSaga

    class Model:
        def __init__(self, state: str, comp_failed: bool) -> None:
            self.state = state
            self.comp_failed = comp_failed
            self.seen: list[tuple[str, str]] = []

        def compensation_had_failed(self) -> bool:
            return self.comp_failed

        def on_transition(self, trigger: str, source: str, dest: str) -> None:
            self.seen.append((source, dest))

    checked = 0
    for saga in (OrderSaga, TripSaga, TransferSaga):
        machine = saga.machine
        for state in machine.states:
            for trigger in ("succeed", "retry", "fail"):
                for comp_failed in (False, True):
                    ours = Model(state.name, comp_failed)
                    theirs = Model(state.name, comp_failed)
                    try:
                        ours.state = machine.next_state(state.name, trigger, comp_failed)
                    except InvalidTransition:
                        ours.state = "<none>"
                    try:
                        if not machine.fsm.events[trigger].trigger(theirs):
                            theirs.state = "<none>"
                    except transitions.MachineError:
                        theirs.state = "<none>"
                    assert ours.state == theirs.state, (saga.name, state.name, trigger, comp_failed)
                    checked += 1
    assert checked == 6 * sum(len(s.machine.states) for s in (OrderSaga, TripSaga, TransferSaga))
