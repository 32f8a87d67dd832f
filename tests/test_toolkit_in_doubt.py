"""statesaga.testing and in-doubt failures (issue #10): the toolkit injects faults
after a handler acted, walks them by default, understands ``failed_in_doubt``,
and finds the two mistakes a user makes with them: (a) a compensation that
assumes it is always handed a result, and (b) a step that can act and then
raise but is not declared in doubt. The corrected sagas, and the order
example, pass.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices, ServiceTimeout
from statesaga import (
    NOT_COMPLETED,
    EntryStatus,
    InDoubt,
    Retry,
    Saga,
    SagaStatus,
    SerializationError,
    StepContext,
    StepTimeout,
    step,
)
from statesaga._attempts import _in_doubt as runner_in_doubt
from statesaga.testing import (
    Exploration,
    Fault,
    InjectedFault,
    InvariantViolation,
    SagaHarness,
    SagaStateMachine,
    Scenario,
    explore,
    outcomes,
)
from statesaga.testing._space import fails_in_doubt, failure_plans, may_fail_in_doubt
from statesaga.testing.strategies import explored_scenarios, scenarios


class GatewayTimeout(Exception):
    """The gateway's answer never came; the charge may have been made."""


class Gateway:
    """A payment gateway: charges by idempotency key, refunds by charge id. It
    times out, after charging, on amounts above ``slow_above``."""

    def __init__(self, slow_above: float = float("inf")) -> None:
        self.slow_above = slow_above
        self.charges: dict[str, float] = {}
        self.refunded: set[str] = set()
        self.calls: Counter[str] = Counter()

    def charge(self, key: str, amount: float) -> str:
        if key not in self.charges:
            self.charges[key] = amount
            self.calls["charge"] += 1
        if amount > self.slow_above:
            raise GatewayTimeout(f"no answer to the charge of {amount}")
        return f"ch-{key}"

    def find(self, key: str) -> str | None:
        """The charge ``key`` made, if any."""
        return f"ch-{key}" if key in self.charges else None

    def refund(self, charge_id: str) -> None:
        key = charge_id.removeprefix("ch-")  # a charge id is a string
        if key not in self.charges:
            raise KeyError(f"no charge {charge_id}")
        if key not in self.refunded:
            self.refunded.add(key)
            self.calls["refund"] += 1

    def effects(self) -> Counter[str]:
        return Counter(self.calls)

    def in_force(self) -> dict[str, int]:
        return {"charges": len(set(self.charges) - self.refunded)}


class Checkout(Saga):
    """Correct: the charge is in doubt on a gateway timeout, and its refund looks
    the charge up by ``ctx.step_key`` when it is handed ``NOT_COMPLETED``."""

    name = "toolkit-checkout"
    version = 1

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.gateway = gateway or Gateway()
        self.stock = Counter[str]()

    @step
    def reserve(self, ctx: StepContext) -> str:
        self.stock[ctx.idempotency_key] = 1
        return ctx.idempotency_key

    @reserve.compensate
    def release(self, ctx: StepContext, reservation: str) -> None:
        self.stock.pop(reservation, None)

    @step(in_doubt=GatewayTimeout)
    def charge(self, ctx: StepContext) -> str:
        return self.gateway.charge(ctx.idempotency_key, ctx.input)

    @charge.compensate
    def refund(self, ctx: StepContext, charge_id: str) -> None:
        if charge_id is NOT_COMPLETED:
            charge_id = self.gateway.find(ctx.step_key)
            if charge_id is None:
                return
        self.gateway.refund(charge_id)

    @step
    def ship(self, ctx: StepContext) -> None:
        pass


class RefundAssumesAResult(Checkout):
    """Bug (a): the refund assumes it is always handed a charge id."""

    name = "toolkit-checkout-refund-assumes-a-result"

    def refund(self, ctx: StepContext, charge_id: str) -> None:
        self.gateway.refund(charge_id)


class RefundSkipsNotCompleted(Checkout):
    """Bug (a), quieter: handed NOT_COMPLETED the refund does nothing, without
    looking up what the charge may have done."""

    name = "toolkit-checkout-refund-skips-not-completed"

    def refund(self, ctx: StepContext, charge_id: str) -> None:
        if charge_id is not NOT_COMPLETED:
            self.gateway.refund(charge_id)


class UndeclaredCharge(Checkout):
    """Bug (b): the gateway can time out after charging, but the charge does not
    say so: its failure is definite, so nothing refunds the charge."""

    name = "toolkit-checkout-undeclared"

    @step
    def charge(self, ctx: StepContext) -> str:
        return self.gateway.charge(ctx.idempotency_key, ctx.input)

    @charge.compensate
    def refund(self, ctx: StepContext, charge_id: str) -> None:
        self.gateway.refund(charge_id)


class AsyncCheckout(Saga):
    """The checkout with an async charge (the fault after acting awaits it first)."""

    name = "toolkit-checkout-async"
    version = 1

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.gateway = gateway or Gateway()

    @step
    async def reserve(self, ctx: StepContext) -> str:
        await asyncio.sleep(0)
        return ctx.idempotency_key

    @step(in_doubt=GatewayTimeout, retry=Retry(max_attempts=2))
    async def charge(self, ctx: StepContext) -> str:
        await asyncio.sleep(0)
        return self.gateway.charge(ctx.idempotency_key, ctx.input)

    @charge.compensate
    async def refund(self, ctx: StepContext, charge_id: str) -> None:
        if charge_id is NOT_COMPLETED:
            charge_id = self.gateway.find(ctx.step_key)
            if charge_id is None:
                return
        self.gateway.refund(charge_id)

    @step
    async def ship(self, ctx: StepContext) -> None:
        await asyncio.sleep(0)


class AsyncRefundAssumesAResult(AsyncCheckout):
    """Bug (a) in the async saga."""

    name = "toolkit-checkout-async-refund-assumes-a-result"

    async def refund(self, ctx: StepContext, charge_id: str) -> None:
        self.gateway.refund(charge_id)


def explore_checkout(
    saga_type: type[Any], db_url: str, amount: float = 10.0, **options: Any
) -> Exploration:
    """explore a checkout saga on a fresh gateway (timing out above ``slow_above``),
    counting its calls and watching the charges in force."""
    gateway = Gateway(options.pop("slow_above", float("inf")))
    return explore(
        saga_type(gateway),
        amount,
        url=db_url,
        effects=gateway.effects,
        state=gateway.in_force,
        **options,
    )


CHARGE_IN_DOUBT = {"charge": Fault(None, InDoubt, after_acting=True)}


# -- (a) a compensation that cannot handle NOT_COMPLETED ---------------------------


@pytest.mark.parametrize("saga", [RefundAssumesAResult, AsyncRefundAssumesAResult])
def test_a_compensation_that_assumes_a_result_is_caught(saga: type[Any], db_url: str) -> None:
    """The charge acts and then fails in doubt: its refund, handed NOT_COMPLETED,
    crashes and the saga ends compensation_failed though nothing made the refund
    fail. explore finds it at default settings, with no crash, and says to look
    the charge up by ctx.step_key."""
    report = explore_checkout(saga, db_url)
    found = report.counterexample
    assert found is not None, f"{saga.__name__} passed"
    assert found.scenario.plan == CHARGE_IN_DOUBT and found.scenario.crash is None
    assert found.outcome.status is SagaStatus.COMPENSATION_FAILED
    message = str(found)
    assert "compensation 'refund' failed for good on NOT_COMPLETED" in message
    assert "charge acts and then fails, every attempt, for good (InDoubt)" in message
    assert "ctx.step_key" in message
    assert "failed_in_doubt" in message  # the log is drawn


def test_a_compensation_that_skips_not_completed_is_caught(db_url: str) -> None:
    """A refund that does nothing when handed NOT_COMPLETED leaves the charge the
    step made before it failed in doubt: the undo invariant catches it and the
    fix says to look the charge up by ctx.step_key."""
    found = explore_checkout(RefundSkipsNotCompleted, db_url).counterexample
    assert found is not None
    assert found.scenario.plan == CHARGE_IN_DOUBT
    assert found.outcome.status is SagaStatus.FAILED
    assert "did not leave the services' state as it found it" in found.problem
    assert "charges: +1" in found.detail
    assert "charge failed in doubt, so refund ran first, handed NOT_COMPLETED" in found.fix
    assert "ctx.step_key" in found.fix


# -- (b) a step that acts and then raises, not declared in doubt --------------------


def test_a_step_that_acts_then_raises_undeclared_is_caught(db_url: str) -> None:
    """The gateway times out after charging large amounts; the charge does not
    list GatewayTimeout as in doubt, so its failure is definite and the charge
    stays. explore's first run catches it, and the fix names in_doubt=, InDoubt
    and compensate_failed=True."""
    found = explore_checkout(UndeclaredCharge, db_url, 100.0, slow_above=50).counterexample
    assert found is not None
    assert found.scenario == Scenario()
    assert outcomes(found.outcome.history)[1] == ("charge", EntryStatus.FAILED)
    assert "charges: +1" in found.detail
    for text in (
        "charge raised (GatewayTimeout: no answer to the charge of 100.0) after it may have acted",
        "@step(in_doubt=(GatewayTimeout,))",
        "raise InDoubt",
        "@step(compensate_failed=True)",
        "ctx.step_key",
    ):
        assert text in found.fix, found.fix


def test_an_injected_fault_after_acting_on_an_undeclared_step_is_a_plain_failure(
    db_url: str,
) -> None:
    """Fault(after_acting=True) with the gateway's own timeout, planned by hand on
    the undeclared charge: the handler charges, the attempt fails definitely
    (logged failed, its refund not run), and the check reports the charge left in
    force with the same fix."""
    gateway = Gateway()
    saga = UndeclaredCharge(gateway)
    with SagaHarness(saga, db_url, gateway.effects, state=gateway.in_force) as harness:
        plan = {"charge": Fault(None, GatewayTimeout, after_acting=True)}
        outcome = harness.run(10.0, Scenario(plan))
        assert outcome.status is SagaStatus.FAILED
        assert outcomes(outcome.history)[1:] == [
            ("charge", EntryStatus.FAILED),
            ("reserve", EntryStatus.COMPENSATED),
        ]
        assert outcome.effects == Counter(charge=1)
        failed = next(e for e in outcome.history if e.status is EntryStatus.FAILED)
        assert "GatewayTimeout: injected failure of charge after it acted" in (failed.error or "")
        with pytest.raises(AssertionError) as caught:
            harness.check(outcome)
    message = str(caught.value)
    assert "charge acted and then failed (GatewayTimeout, injected)" in message
    assert "@step(in_doubt=(GatewayTimeout,))" in message


# -- the corrected sagas and the order example pass ----------------------------------


@pytest.mark.parametrize(
    ("saga", "options"),
    [
        (Checkout, {}),
        (Checkout, {"errors": (GatewayTimeout,)}),
        (Checkout, {"slow_above": 50, "amount": 100.0}),
        (AsyncCheckout, {}),
    ],
    ids=["checkout", "own-errors", "slow-gateway", "async"],
)
def test_the_corrected_sagas_pass(saga: type[Any], options: dict[str, Any], db_url: str) -> None:
    """Declared in doubt, with a refund that looks the charge up when handed
    NOT_COMPLETED, the checkout passes its whole space — faults after acting
    included, by every crash point — sync and async, with the gateway timing out
    by itself or not."""
    options = dict(options)
    amount = options.pop("amount", 10.0)
    report = explore_checkout(saga, db_url, amount, **options)
    assert report.ok, str(report.counterexample)
    if "slow_above" not in options:  # the space is predicted for handlers that do not fail
        assert report.scenarios == report.space


def test_the_order_example_passes_with_its_in_doubt_scenarios(db_url: str) -> None:
    """The order example lists ServiceTimeout as in doubt on its three compensated
    steps: its space holds the faults after acting of each, and it passes all of
    it, by every crash point."""
    services = FakeServices()
    report = explore(
        OrderSaga(services),
        OrderRequest("c-1", 10.0),
        url=db_url,
        effects=services.effect_counts,
        state=services.snapshot,
        errors=(InjectedFault, ServiceTimeout),
    )
    assert report.ok, str(report.counterexample)
    assert report.scenarios == report.space
    plans = [p for _, p in failure_plans(OrderSaga, [InjectedFault, ServiceTimeout], 1)]
    acted = {h for p in plans for h, f in p.items() if f.after_acting}
    assert acted == {"create_order", "charge_payment", "reserve_inventory"}
    # with the application's timeout given, the faults after acting raise it
    assert {f.error for p in plans for f in p.values() if f.after_acting} == {ServiceTimeout}


def test_a_fault_after_acting_runs_the_handler_and_compensates_it(db_url: str) -> None:
    """On the order saga, the charge failing after acting: the payment is made,
    the step is logged failed_in_doubt, refund_payment is handed NOT_COMPLETED
    and refunds it; nothing stays in force and the checks pass."""
    services = FakeServices()
    saga = OrderSaga(services)
    with SagaHarness(saga, db_url, services.effect_counts, state=services.snapshot) as harness:
        outcome = harness.run(OrderRequest("c-1", 10.0), Scenario(CHARGE_PAYMENT_IN_DOUBT))
        harness.check(outcome)
    assert outcome.status is SagaStatus.FAILED
    assert ("charge_payment", EntryStatus.FAILED_IN_DOUBT) in outcomes(outcome.history)
    refunds = [c for c in outcome.calls if c.state == "refund_payment"]
    assert [c.args[1] for c in refunds] == [NOT_COMPLETED]
    assert outcome.effects["payments.charge"] == 1 and outcome.effects["payments.refund"] == 1
    assert not services.snapshot()
    charges = [c for c in outcome.calls if c.state == "charge_payment"]
    assert len(charges) == 3 and all(c.injected and c.error is None for c in charges)


CHARGE_PAYMENT_IN_DOUBT = {"charge_payment": Fault(None, InDoubt, after_acting=True)}


def test_a_fault_after_acting_on_a_step_without_compensation_is_a_plain_failure(
    db_url: str,
) -> None:
    """The order saga's last step has no compensation: it gets no fault after
    acting, and one planned by hand fails it plainly (its handler ran; only the
    completed steps are compensated)."""
    assert not may_fail_in_doubt(OrderSaga.spec.step("confirm_order"))
    services = FakeServices()
    with SagaHarness(OrderSaga(services), db_url, services.effect_counts) as harness:
        plan = {"confirm_order": Fault(None, InDoubt, after_acting=True)}
        outcome = harness.run(OrderRequest("c-1", 10.0), Scenario(plan))
        harness.check(outcome)
    assert ("confirm_order", EntryStatus.FAILED) in outcomes(outcome.history)
    assert outcome.effects["orders.confirm"] == 1


# -- the space's rule is the runner's -------------------------------------------------


@pytest.mark.parametrize("saga", [OrderSaga, Checkout, UndeclaredCharge])
@pytest.mark.parametrize(
    "error",
    [InjectedFault, InDoubt, GatewayTimeout, ServiceTimeout, ValueError, SerializationError],
)
def test_the_space_predicts_in_doubt_as_the_runner_decides(saga: type[Saga], error: type) -> None:
    """fails_in_doubt (error types, for the space) agrees with the runner's rule
    (error instances) on every step of the sagas, for errors in doubt or not."""
    instance = error.__new__(error)  # some take structured arguments; the type is what counts
    for s in saga.spec.steps:
        assert fails_in_doubt(s, error) == runner_in_doubt(s, instance)
    timed = Checkout.spec.step("charge")
    assert fails_in_doubt(timed, StepTimeout) == runner_in_doubt(
        timed, StepTimeout("id", "charge", 1.0)
    )


# -- strategies draw faults after acting where they can happen ------------------------


def test_scenarios_draw_faults_after_acting_only_where_a_step_may_fail_in_doubt() -> None:
    """scenarios(OrderSaga) draws faults after acting, and only on the three steps
    that list ServiceTimeout and have a compensation; explored_scenarios draws
    them too."""
    acted: set[str] = set()
    explored: set[str] = set()

    @settings(max_examples=300, database=None, derandomize=True)
    @given(scenarios(OrderSaga), explored_scenarios(OrderSaga))
    def collect(scenario: Scenario, from_space: Scenario) -> None:
        acted.update(h for h, f in scenario.plan.items() if f.after_acting)
        explored.update(h for h, f in from_space.plan.items() if f.after_acting)

    collect()
    doubtful = {"create_order", "charge_payment", "reserve_inventory"}
    assert acted == doubtful
    assert explored and explored <= doubtful


@settings(
    max_examples=40,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=explored_scenarios(Checkout, crash=True))
def test_checkout_passes_drawn_crash_scenarios(db_url: str, scenario: Scenario) -> None:
    """Any crash scenario of the checkout's space (faults after acting among them)
    ends as the same faults without the crash, its crash happening where drawn."""
    gateway = Gateway()
    with SagaHarness(Checkout(gateway), db_url, gateway.effects, state=gateway.in_force) as h:
        outcome = h.check_against_baseline(10.0, scenario)
    assert outcome.crashed


# -- the state machine ---------------------------------------------------------------


def run_checkout_machine(saga: type[Any], **options: Any) -> None:
    """Run a state machine for a checkout saga (a fresh gateway per run) once,
    derandomized, under ``options`` (Hypothesis settings)."""
    machine = type(
        f"{saga.__name__}Machine",
        (SagaStateMachine,),
        {},
        saga=lambda: saga(Gateway()),
        inputs=st.just(10.0),
        effects=lambda s: s.gateway.effects(),
        state=lambda s: s.gateway.in_force(),
    )
    machine.TestCase.settings = settings(
        deadline=None, database=None, derandomize=True, stateful_step_count=8, **options
    )
    machine.TestCase("runTest").runTest()


def test_the_state_machine_finds_a_compensation_that_assumes_a_result() -> None:
    """SagaStateMachine draws faults after acting from explore's space: it finds
    the refund that crashes on NOT_COMPLETED, and passes the corrected checkout."""
    no_shrink = (Phase.explicit, Phase.reuse, Phase.generate)
    with pytest.raises(InvariantViolation, match="on NOT_COMPLETED"):
        run_checkout_machine(RefundAssumesAResult, max_examples=10, phases=no_shrink)
    run_checkout_machine(Checkout, max_examples=5)
