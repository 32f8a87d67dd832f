"""explore walks a saga's whole failure space: correct sagas pass, every planted bug
is caught at default settings, deterministically, with a worded counterexample."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.transfer import TransferRequest, TransferSaga, balances, open_accounts
from definitions.trip import TripRequest, TripSaga
from statesaga import InDoubt, Saga
from statesaga.testing import (
    Crash,
    Exploration,
    Fault,
    InjectedFault,
    InvariantViolation,
    assert_saga_correct,
    explore,
)
from statesaga.testing._space import failure_plans
from tests.toolkit_sagas import (
    AsyncDoubleRefund,
    AsyncOrderSaga,
    DoubleRefund,
    Flaky,
    LedgerSaga,
    OutOfStock,
    RefundRaisesWhenDone,
    ReleaseIgnoresResult,
    ReserveThenCheck,
    RetryOnFlaky,
    UnkeyedCharge,
    create_ledger,
    ledger_total,
)

ORDER = OrderRequest("c-1", 10.0)


def explore_with_services(
    saga_type: Callable[[FakeServices], Saga], input: Any, db_url: str, **options: Any
) -> Exploration:
    """explore a saga on FakeServices, counting their effects and watching their state."""
    services = FakeServices()
    return explore(
        saga_type(services),
        input,
        url=db_url,
        effects=services.effect_counts,
        state=services.snapshot,
        **options,
    )


# -- correct sagas pass --------------------------------------------------------------


@pytest.mark.parametrize(
    ("saga", "input"),
    [
        (OrderSaga, ORDER),
        (TripSaga, TripRequest("ann", "Porto", 2, 5_000.0)),
        (AsyncOrderSaga, ORDER),
    ],
    ids=["order", "trip", "async-order"],
)
def test_correct_sagas_pass_the_whole_space(saga: Any, input: Any, db_url: str) -> None:
    """The example sagas (and the async order saga) pass every scenario of their
    failure space at default settings, and explore ran all of it."""
    report = explore_with_services(saga, input, db_url)
    assert report.ok, str(report.counterexample)
    assert not report.sampled
    assert report.scenarios == report.space  # every predicted crash point was reached
    assert "no counterexample" in str(report)


def test_transfer_saga_passes_with_its_balances_as_state(db_url: str) -> None:
    """The transfer saga's transactional steps pass too, with the account
    balances (in the saga database, opened by setup) as the undo invariant's
    state; a transfer over the screening limit fails and must restore them."""
    app = sa.create_engine(db_url)
    services = FakeServices()
    opened: list[bool] = []

    def setup(engine: sa.Engine) -> None:
        if not opened:
            open_accounts(engine, {"alice": 10**9, "bob": 0})
            opened.append(True)

    try:
        for amount in (500, 5_000):  # within the limit, and over it
            report = explore(
                TransferSaga(services, limit=1_000),
                TransferRequest("alice", "bob", amount),
                url=db_url,
                effects=services.effect_counts,
                state=lambda: balances(app),
                setup=setup,
            )
            assert report.ok, str(report.counterexample)
    finally:
        app.dispose()


# -- planted bugs are caught -------------------------------------------------------

REFUND_AFTER_RESERVE_FAILS = {"reserve_inventory": Fault(None)}
CRASH_IN_REFUND = Crash("before_commit", "refund_payment", 1)


@pytest.mark.parametrize(
    ("saga", "input", "plan", "crash", "expected"),
    [
        pytest.param(
            DoubleRefund,
            ORDER,
            REFUND_AFTER_RESERVE_FAILS,
            CRASH_IN_REFUND,
            [
                "refund_payment ran twice (crash after its handler, before its commit)",
                "payments.refund: 1 → 2",
                "make refund_payment idempotent: pass ctx.idempotency_key",
            ],
            id="non-idempotent-compensation",
        ),
        pytest.param(
            UnkeyedCharge,
            ORDER,
            {},
            Crash("before_commit", "charge_payment", 1),
            [
                "charge_payment ran twice (crash after its handler, before its commit)",
                "payments.charge: 1 → 2",
                "pass ctx.idempotency_key to the service",
            ],
            id="charge-ignores-idempotency-key",
        ),
        pytest.param(
            ReleaseIgnoresResult,
            ORDER,
            {"confirm_order": Fault(None)},
            None,
            [
                "the saga ended failed but did not leave the services' state as it found it",
                "inventory.reserve: +1",
                "use the result it is handed",
            ],
            id="compensation-ignores-its-result",
        ),
        pytest.param(
            ReserveThenCheck,
            OrderRequest("c-1", 10.0, quantity=9),
            {},
            None,
            [
                "the saga ended failed but did not leave the services' state as it found it",
                "inventory.reserve: +1",
                f"reserve_inventory raised ({OutOfStock.__name__}: only 5 of sku-1 in stock)",
            ],
            id="step-acts-then-fails",
        ),
        pytest.param(
            RefundRaisesWhenDone,
            ORDER,
            REFUND_AFTER_RESERVE_FAILS,
            CRASH_IN_REFUND,
            [
                "refund_payment ran twice (crash after its handler, before its commit) and "
                "raised the second time: ServiceError",
                "must succeed when there is nothing left to undo",
            ],
            id="compensation-raises-on-nothing-to-undo",
        ),
        pytest.param(
            AsyncDoubleRefund,
            ORDER,
            REFUND_AFTER_RESERVE_FAILS,
            CRASH_IN_REFUND,
            [
                "refund_payment ran twice (crash after its handler, before its commit)",
                "payments.refund: 1 → 2",
            ],
            id="async-non-idempotent-compensation",
        ),
    ],
)
def test_planted_bug_is_caught_the_same_way_every_run(
    saga: Any,
    input: Any,
    plan: dict[str, Fault],
    crash: Crash | None,
    expected: list[str],
    db_url: str,
) -> None:
    """At default settings explore stops at the smallest scenario that shows the
    bug — the fewest faults and crashes, no duplicate start — and its message
    names it in words, shows what differs, the likely fix and the log. Run twice,
    it runs the same scenarios and reports the same counterexample."""
    first = explore_with_services(saga, input, db_url)
    again = explore_with_services(saga, input, db_url)
    found = first.counterexample
    assert found is not None, f"{saga.__name__} passed"
    assert found.scenario.plan == plan
    assert found.scenario.crash == crash
    assert found.scenario.duplicates == 0
    message = str(found)
    for text in expected:
        assert text in message, message
    assert "scenario: " in message and "likely fix: " in message
    assert found.outcome.history[0].step in message  # the log is drawn
    if crash is not None:
        assert f"✗ crash after {crash.state}'s handler" in message  # marked in the log
    assert again.counterexample is not None
    assert (again.scenarios, again.counterexample.scenario) == (first.scenarios, found.scenario)
    assert again.counterexample.fix == found.fix


def test_assert_saga_correct_fails_with_the_counterexample(statesaga_url: str) -> None:
    """assert_saga_correct, given the pytest plugin's database, passes a correct
    saga and raises the counterexample's InvariantViolation for a broken one."""
    services = FakeServices()
    report = assert_saga_correct(
        OrderSaga(services), ORDER, url=statesaga_url, effects=services.effect_counts, crashes=0
    )
    assert report.ok and report.scenarios == report.plans
    with pytest.raises(InvariantViolation) as caught:
        assert_saga_correct(
            DoubleRefund(services), ORDER, url=statesaga_url, effects=services.effect_counts
        )
    assert caught.value.counterexample is not None
    assert caught.value.counterexample.scenario.crash == CRASH_IN_REFUND
    assert str(caught.value).startswith("refund_payment ran twice")


# -- the space -----------------------------------------------------------------------


def test_failure_plans_are_reachable_and_distinct() -> None:
    """The order saga's plans: no fault; each step failing for good, and the charge
    failing once or twice before it succeeds (its policy allows three attempts);
    each compensation failing after each step failure that makes it run; then,
    for each step that may fail in doubt (it lists ServiceTimeout and has a
    compensation), the same after acting, in doubt, and each compensation failing
    after its own step failed in doubt. No two plans take the same path."""
    plans = [plan for _, plan in failure_plans(OrderSaga, [InjectedFault], 1)]
    assert plans[0] == {}
    steps = [p for p in plans[1:] if len(p) == 1]
    acted = [Fault(None, InDoubt, True), Fault(1, InDoubt, True), Fault(2, InDoubt, True)]
    assert steps == [
        {"create_order": Fault(None)},
        {"charge_payment": Fault(None)},
        {"charge_payment": Fault(1)},
        {"charge_payment": Fault(2)},
        {"reserve_inventory": Fault(None)},
        {"confirm_order": Fault(None)},
        {"create_order": acted[0]},
        *({"charge_payment": fault} for fault in acted),
        {"reserve_inventory": acted[0]},
    ]
    compensations = [p for p in plans if len(p) == 2]
    assert {"charge_payment": Fault(None), "cancel_order": Fault(None)} in compensations
    assert {"confirm_order": Fault(None), "release_reservation": Fault(None)} in compensations
    assert {"charge_payment": acted[0], "refund_payment": Fault(None)} in compensations
    # cancel, refund, release: after each later step failing, then after their own in doubt
    assert len(compensations) == 3 + 2 + 1 + 3
    first_acted = next(i for i, p in enumerate(plans) if any(f.after_acting for f in p.values()))
    assert not any(f.after_acting for p in plans[:first_acted] for f in p.values())
    assert all(any(f.after_acting for f in p.values()) for p in plans[first_acted:])
    two = [p for _, p in failure_plans(OrderSaga, [InjectedFault], 2)]
    assert len(two) > len(plans) and all(len(p) <= 3 for p in two)


def test_a_step_that_cannot_fail_in_doubt_gets_no_fault_after_acting() -> None:
    """The trip saga lists nothing in doubt and has no timeout: its space is what it
    was before faults after acting existed, and the last step of the order saga
    (no compensation) gets none either."""
    trip = [p for _, p in failure_plans(TripSaga, [InjectedFault], 1)]
    assert not any(f.after_acting for p in trip for f in p.values())
    order = [p for _, p in failure_plans(OrderSaga, [InjectedFault], 1)]
    assert not any(p.get("confirm_order", Fault()).after_acting for p in order)


def test_errors_given_exercise_the_retry_policy(db_url: str) -> None:
    """A step retried only on the application's own error type fails for good on
    the default injected fault; with errors=(Flaky,) explore also plans it
    failing once and twice before it succeeds, and the retries pass."""
    default = [p for _, p in failure_plans(RetryOnFlaky, [InjectedFault], 1)]
    own = [p for _, p in failure_plans(RetryOnFlaky, [Flaky], 1)]
    assert {"charge_payment": Fault(1)} not in default
    assert {"charge_payment": Fault(1, Flaky)} in own
    assert {"charge_payment": Fault(2, Flaky)} in own
    report = explore_with_services(RetryOnFlaky, ORDER, db_url, errors=(Flaky,), crashes=0)
    assert report.ok, str(report.counterexample)
    assert report.plans == report.scenarios == len(own)


def test_a_second_crash_at_every_point_the_resumed_run_reaches(db_url: str) -> None:
    """crashes=2 adds, to each crash scenario, a second crash at every point the
    resumed run reaches; a correct saga passes them all."""
    one = explore(LedgerSaga(), None, url=db_url, setup=create_ledger)
    two = explore(LedgerSaga(), None, url=db_url, setup=create_ledger, crashes=2)
    assert one.ok and two.ok, str(two.counterexample)
    assert two.plans == one.plans
    assert two.scenarios == two.space > 3 * one.scenarios


def test_too_large_a_space_is_sampled_the_same_way_every_run(db_url: str) -> None:
    """Past max_scenarios explore samples the space with Hypothesis, says so, and
    samples the same scenarios on every run; a bug it reaches is still reported."""
    services = FakeServices()
    trip = TripRequest("ann", "Porto", 2, 5_000.0)
    first, again = (
        explore(
            TripSaga(services), trip, url=db_url, effects=services.effect_counts, max_scenarios=40
        )
        for _ in range(2)
    )
    assert first.sampled and first.ok, str(first.counterexample)
    assert "sampled" in str(first) and first.space > 40
    assert again.scenarios == first.scenarios
    broken = explore(
        UnkeyedCharge(services),
        ORDER,
        url=db_url,
        effects=services.effect_counts,
        max_scenarios=100,
    )
    assert broken.sampled and broken.counterexample is not None
    crash = broken.counterexample.scenario.crash
    assert crash is not None and (crash.point, crash.state) == ("before_commit", "charge_payment")


# -- async sagas and the event loop ----------------------------------------------------


def test_async_saga_runs_on_one_event_loop(db_url: str) -> None:
    """explore runs an async saga's handlers on one event loop for all its runs,
    as an application server would."""
    saga = AsyncOrderSaga(FakeServices())
    report = explore(saga, ORDER, url=db_url, effects=saga.services.effect_counts)
    assert report.ok, str(report.counterexample)
    assert len(saga.loops) == 1


def test_aexplore_runs_async_handlers_on_the_callers_loop(db_url: str) -> None:
    """aexplore, awaited in async code, runs the handlers on the caller's loop
    (where the application's async clients live) and finds the same bug."""

    async def main() -> tuple[Exploration, asyncio.AbstractEventLoop]:
        from statesaga.testing import aexplore

        services = FakeServices()
        saga = AsyncDoubleRefund(services)
        report = await aexplore(saga, ORDER, url=db_url, effects=services.effect_counts)
        assert saga.loops == {asyncio.get_running_loop()}
        return report, asyncio.get_running_loop()

    report, _ = asyncio.run(main())
    assert report.counterexample is not None
    assert report.counterexample.scenario.crash == CRASH_IN_REFUND


# -- a run that tests nothing fails ------------------------------------------------------


def test_a_vacuous_run_is_a_failure(db_url: str) -> None:
    """A saga whose first handler needs a table nobody created fails every run:
    explore reports that no handler ran to its end (and says to set it up)
    instead of passing; with setup= it passes, its ledger as the state."""
    report = explore(LedgerSaga(), None, url=db_url)
    assert report.counterexample is not None
    assert "no handler ran to its end" in report.counterexample.problem
    assert "setup=" in report.counterexample.fix
    app = sa.create_engine(db_url)
    try:
        ok = explore(
            LedgerSaga(), None, url=db_url, setup=create_ledger, state=lambda: ledger_total(app)
        )
    finally:
        app.dispose()
    assert ok.ok, str(ok.counterexample)
