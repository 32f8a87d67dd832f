"""In-doubt failures: a step that may have acted before it failed is compensated.

Issue #10, case 1: a step charges a card and then overruns its timeout (sync),
is cancelled by its timeout (async), or raises after acting; retries run out.
Before, the saga ended ``failed`` with 1 charge and 0 refunds. Now a step that
fails for good in doubt has its own compensation run first, handed
``NOT_COMPLETED``, then the completed steps' compensations in reverse.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statesaga import (
    NOT_COMPLETED,
    EntryStatus,
    Hooks,
    InDoubt,
    InvalidDefinition,
    Retry,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
    step,
)
from statesaga.diagrams import build_model
from statesaga.examples.order import OPERATIONS, OrderRequest, OrderSaga
from statesaga.examples.services import FakeServices, ServiceError
from statesaga.testing import check_saga, outcomes


class Card:
    """A card processor: charges and refunds by idempotency key."""

    def __init__(self) -> None:
        self.charges: dict[str, int] = {}
        self.refunds: list[str] = []
        self.handed: list[Any] = []

    def charge(self, key: str) -> str:
        self.charges[key] = self.charges.get(key, 0) + 1
        return f"ch-{key}"

    def refund(self, charge_key: str, handed: Any) -> None:
        self.handed.append(handed)
        if charge_key in self.charges:
            self.refunds.append(charge_key)

    @property
    def in_force(self) -> int:
        return len(self.charges) - len(self.refunds)


def card_saga(
    card: Card, *, act: Callable[[], None], options: dict[str, Any], async_step: bool = False
) -> type[Saga]:
    """A two-step saga whose ``charge`` charges the card, then does ``act`` (which
    may raise or sleep), as a sync or async handler with ``options``."""

    class Checkout(Saga):
        name = f"checkout_{uuid.uuid4().hex[:8]}"

        @step
        def reserve(self, ctx: StepContext) -> str:
            return "r-1"

        @reserve.compensate
        def release(self, ctx: StepContext, result: str) -> None:
            card.handed.append(("release", result))

        if async_step:

            @step(**options)
            async def charge(self, ctx: StepContext) -> str:
                card.charge(ctx.idempotency_key)
                await asyncio.Event().wait()  # cancelled by the timeout
                return "never"

        else:

            @step(**options)
            def charge(self, ctx: StepContext) -> str:
                charged = card.charge(ctx.idempotency_key)
                act()
                return charged

        @charge.compensate
        def refund(self, ctx: StepContext, charge_id: str) -> None:
            card.refund(ctx.step_key, charge_id)

    return Checkout


def overrun() -> None:
    time.sleep(0.05)  # always longer than the 0.01 s timeout


def read_timeout() -> None:
    raise TimeoutError("read timed out")


def in_doubt() -> None:
    raise InDoubt("the charge request went out; no answer")


def declined() -> None:
    raise ValueError("declined")


CASES = {
    "sync timeout": ({"timeout": 0.01}, overrun, False),
    "async timeout": ({"timeout": 0.02}, overrun, True),
    "listed in_doubt": ({"in_doubt": (TimeoutError,)}, read_timeout, False),
    "raise InDoubt": ({}, in_doubt, False),
    "compensate_failed": ({"compensate_failed": True}, declined, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_step_that_fails_in_doubt_is_compensated_first(engine: SagaEngine, case: str) -> None:
    """Each way a step may have acted before failing: its own compensation runs,
    handed NOT_COMPLETED, then the completed step's; no charge stays in force."""
    options, act, async_step = CASES[case]
    card = Card()
    saga = card_saga(card, act=act, options={**options, "retry": Retry(2)}, async_step=async_step)
    engine.register(saga)
    run = engine.run(saga, None)
    assert run.status is SagaStatus.FAILED
    assert card.in_force == 0, "the charge made by the step that failed stays"
    assert card.refunds == [f"{run.saga_id}:charge"]
    assert card.handed == [NOT_COMPLETED, ("release", "r-1")]
    history = engine.history(run.saga_id)
    assert outcomes(history) == [
        ("reserve", EntryStatus.COMPLETED),
        ("charge", EntryStatus.FAILED_IN_DOUBT),
        ("charge", EntryStatus.COMPENSATED),
        ("reserve", EntryStatus.COMPENSATED),
    ]
    assert [e.attempt for e in history if e.status is EntryStatus.EXECUTING][1:] == [1, 2]
    check_saga(saga.spec, run.status, history)


def test_a_definite_failure_is_not_compensated(engine: SagaEngine) -> None:
    """A failure that is not in doubt (not a timeout, not listed, not InDoubt) means
    the step did nothing: only the completed steps are compensated, as before."""
    card = Card()
    saga = card_saga(card, act=declined, options={"in_doubt": TimeoutError})
    engine.register(saga)
    run = engine.run(saga, None)
    assert run.status is SagaStatus.FAILED
    assert card.handed == [("release", "r-1")]
    assert outcomes(engine.history(run.saga_id))[1] == ("charge", EntryStatus.FAILED)
    # A definite failure: the processor says no charge exists... but the fake
    # charged first; that is what in_doubt= is for, and why this one is listed.
    assert card.in_force == 1


def test_a_compensation_on_the_last_step_runs_only_when_it_fails_in_doubt(
    engine: SagaEngine,
) -> None:
    """The last step may have a compensation again: it never runs when the saga
    completes, and runs for an in-doubt failure of that step."""
    calls: list[Any] = []

    class Pay(Saga):
        name = "pay_last"

        @step
        def pay(self, ctx: StepContext) -> str:
            if ctx.input == "timeout":
                raise InDoubt("no answer")
            return "paid"

        @pay.compensate
        def refund(self, ctx: StepContext, result: str) -> None:
            calls.append(result)

    engine.register(Pay)
    assert engine.run(Pay, "ok").status is SagaStatus.COMPLETED
    assert calls == []
    failed = engine.run(Pay, "timeout")
    assert failed.status is SagaStatus.FAILED
    assert calls == [NOT_COMPLETED]
    assert "InDoubt: no answer" in (failed.error or "")


class CrashAt(Hooks):
    """Crash (a BaseException, as a killed process) once, when ``state`` is entered."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.fired = False

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "after_commit" and state == self.state and not self.fired:
            self.fired = True
            raise SystemExit("crash")


def test_a_crash_after_the_in_doubt_failure_resumes_into_its_compensation(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """The in-doubt failure is committed before its compensation runs: a crash
    right after it resumes into that compensation, handed NOT_COMPLETED."""
    card = Card()
    saga = card_saga(card, act=in_doubt, options={})
    first = new_engine()
    first.register(saga())
    first.hooks = CrashAt("refund")
    with pytest.raises(SystemExit):
        first.run(saga, None, saga_id="crashy")
    assert card.handed == []
    second = new_engine()
    second.register(saga())
    run = second.resume("crashy")
    assert run.status is SagaStatus.FAILED
    assert card.handed == [NOT_COMPLETED, ("release", "r-1")]
    assert card.in_force == 0


def test_in_doubt_options_need_a_compensation_and_exception_classes() -> None:
    with pytest.raises(InvalidDefinition, match=r"in_doubt=\.\.\. but no compensation"):

        class NoUndo(Saga):
            @step(in_doubt=TimeoutError)
            def act(self, ctx: StepContext) -> None: ...

    with pytest.raises(InvalidDefinition, match="compensate_failed=True but no compensation"):

        class NoUndoEither(Saga):
            @step(compensate_failed=True)
            def act(self, ctx: StepContext) -> None: ...

    with pytest.raises(InvalidDefinition, match="in_doubt takes exception classes"):

        class NotAnError(Saga):
            @step(in_doubt=("TimeoutError",))  # type: ignore[arg-type]
            def act(self, ctx: StepContext) -> None: ...

            @act.compensate
            def undo(self, ctx: StepContext, result: None) -> None: ...


def test_the_diagram_draws_the_in_doubt_edge_to_the_steps_own_compensation() -> None:
    model = build_model(OrderSaga.spec, OrderSaga.machine)
    doubt = {(e.source, e.dest, e.label) for e in model.edges if e.kind == "in_doubt"}
    assert doubt == {
        ("create_order", "cancel_order", "in doubt"),
        ("charge_payment", "refund_payment", "in doubt"),
        ("reserve_inventory", "release_reservation", "in doubt"),
    }


# -- the property: nothing any handler did stays after `failed` --------------------

#: Per handler of the order saga: no failure, failures before acting (n times or
#: always), or failures after acting (in doubt: the effect is made, the answer lost).
plans = st.fixed_dictionaries(
    {
        name: st.one_of(
            st.just((0, False)),
            st.tuples(st.one_of(st.integers(1, 3), st.none()), st.booleans()),
        )
        for name in OPERATIONS
    }
)


class Crash(Hooks):
    """Crash at the ``n``-th commit point of a run (if it gets that far)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise SystemExit(f"crash at {point} of {state}")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans, crash=st.one_of(st.none(), st.integers(1, 16)))
def test_failed_means_every_effect_was_undone(
    db_url: str,
    plan: dict[str, tuple[int | None, bool]],
    crash: int | None,
) -> None:
    """For any failure plan — failures before or after acting, in any handler, any
    number of times — and any crash point: a saga that ends ``failed`` leaves no
    effect of any handler in force, and a ``completed`` one ran no compensation."""
    services = FakeServices()
    for handler, (times, after) in plan.items():
        if times != 0:
            services.fail(OPERATIONS[handler], times=times, after_acting=after)
    saga_id = uuid.uuid4().hex
    saga = OrderSaga(services)
    with SagaEngine(db_url) as first:
        first.register(saga)
        first.hooks = Crash(crash) if crash is not None else None
        try:
            run = first.run(saga, OrderRequest("c-1", 30.0), saga_id=saga_id)
        except SystemExit:
            with SagaEngine(db_url) as again:
                again.register(saga)
                run = again.resume(saga_id)
        history = first.history(saga_id)
    check_saga(OrderSaga.spec, run.status, history)
    undo_ops = {"orders.cancel", "payments.refund", "inventory.release"}
    if run.status is SagaStatus.FAILED:
        assert not services.snapshot(), f"left in force after failed: {services.snapshot()}"
    if run.status is SagaStatus.COMPLETED:
        assert not any(op in undo_ops for op, _ in services.effects)
    for op in OPERATIONS.values():
        assert all(n == 1 for n in services.count(op).values()), f"{op} doubled"


def test_service_errors_before_acting_stay_definite() -> None:
    """The fake's plain failure acts not at all; the in-doubt one acts, then raises."""
    services = FakeServices()
    services.fail("payments.charge", times=1)
    with pytest.raises(ServiceError):
        services.call("payments.charge", "k")
    assert services.find("payments.charge", "k") is None
    services.fail("payments.charge", times=1, after_acting=True)
    with pytest.raises(ServiceError):
        services.call("payments.charge", "k")
    assert services.find("payments.charge", "k") is not None
