"""Crash and resume: simulated crashes at every point give the same saga as no crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.trip import TripRequest, TripSaga
from statesaga import Saga, SagaEngine, SagaStatus, StepContext, step
from statesaga.testing import CRASH_POINTS, Crash, Fault, SagaHarness, check_saga, outcomes


def fault_plans(saga: type[Saga]) -> st.SearchStrategy[dict[str, Fault]]:
    names = [s.name for s in saga.machine.states if s.kind != "terminal"]
    fault = st.builds(Fault, times=st.one_of(st.integers(1, 3), st.none()))
    return st.dictionaries(st.sampled_from(names), fault, max_size=len(names))


def crashes(saga: type[Saga]) -> st.SearchStrategy[Crash]:
    names = [s.name for s in saga.machine.states if s.kind != "terminal"]
    return st.builds(
        Crash,
        point=st.sampled_from(CRASH_POINTS),
        state=st.sampled_from(names),
        occurrence=st.integers(1, 2),
    )


@pytest.fixture
def order_harness(db_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(OrderSaga(FakeServices()), db_url) as harness:
        yield harness


@pytest.fixture
def trip_harness(db_url: str) -> Iterator[SagaHarness]:
    with SagaHarness(TripSaga(FakeServices()), db_url) as harness:
        yield harness


def same_as_without_crash(
    harness: SagaHarness, request: object, plan: dict[str, Fault], crash: Crash
) -> None:
    baseline = harness.run(request, plan=plan)
    crashed = harness.run(request, plan=plan, crash=crash)
    spec = type(harness.saga).spec
    check_saga(spec, crashed.status, crashed.history)
    assert crashed.status is baseline.status
    assert outcomes(crashed.history) == outcomes(baseline.history)
    # Results name the saga id (the fakes derive ids from idempotency keys), so
    # compare which steps produced what kind of result.
    assert {k: type(v) for k, v in crashed.results.items()} == {
        k: type(v) for k, v in baseline.results.items()
    }
    # Every compensation was handed exactly what its step returned.
    for call in crashed.calls:
        info = type(harness.saga).machine.state(call.state)
        if info.kind == "compensation":
            assert call.args[1] == crashed.results[info.step]


shared = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)


@shared
@given(plan=fault_plans(OrderSaga), crash=crashes(OrderSaga))
# A crash between retries must not reset the retry budget.
@example(
    plan={"charge_payment": Fault(3)}, crash=Crash("after_commit", "charge_payment", occurrence=2)
)
def test_order_saga_crash_anywhere(
    order_harness: SagaHarness, plan: dict[str, Fault], crash: Crash
) -> None:
    """Order saga: for any failure plan and any crash point, resuming in a fresh engine
    ends in the same status, with the same outcomes and results, as a run without crash."""
    same_as_without_crash(order_harness, OrderRequest("c-1", 42.0), plan, crash)


@shared
@given(plan=fault_plans(TripSaga), crash=crashes(TripSaga))
def test_trip_saga_crash_anywhere(
    trip_harness: SagaHarness, plan: dict[str, Fault], crash: Crash
) -> None:
    """The same for the six-step trip saga, whose results are attrs classes."""
    same_as_without_crash(trip_harness, TripRequest("ann", "Rome", 2, 10_000.0), plan, crash)


def test_resume_never_reruns_completed_steps(order_harness: SagaHarness) -> None:
    """A crash after the second step's commit: on resume only the later steps run,
    and the in-flight step runs again with the next attempt number."""
    out = order_harness.run(
        OrderRequest("c-1", 42.0), crash=Crash("after_commit", state="charge_payment")
    )
    assert out.crashed and out.status is SagaStatus.COMPLETED
    ran = [(c.state, c.attempt) for c in out.calls]
    assert ran == [
        ("create_order", 1),
        ("charge_payment", 1),
        ("reserve_inventory", 2),
        ("confirm_order", 1),
    ]


def test_crash_before_commit_reruns_with_same_key(order_harness: SagaHarness) -> None:
    """A crash after a handler ran but before its commit re-runs that handler with
    the same idempotency key, so the service sees one effect."""
    services = order_harness.saga.services  # type: ignore[attr-defined]
    out = order_harness.run(
        OrderRequest("c-1", 42.0), crash=Crash("before_commit", state="charge_payment")
    )
    assert out.crashed and out.status is SagaStatus.COMPLETED
    keys = [c.args[0].idempotency_key for c in out.calls if c.state == "charge_payment"]
    assert len(keys) == 2 and keys[0] == keys[1]
    assert services.count("payments.charge") == {keys[0]: 1}


class Transfer(Saga):
    """Moves money between two rows of the saga database, transactionally."""

    name = "transfer-test"

    @step(transactional=True)
    def debit(self, ctx: StepContext) -> None:
        assert ctx.connection is not None
        ctx.connection.execute(sa.text("UPDATE accounts SET balance = balance - 10 WHERE id = 'a'"))

    @step
    def notify(self, ctx: StepContext) -> None: ...


def test_transactional_step_crash_before_commit_leaves_nothing(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """A crash between a transactional step's handler and its commit leaves neither the
    step's write nor the transition; the resumed saga writes it exactly once."""
    engine = new_engine()
    with engine.store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE accounts (id VARCHAR(8) PRIMARY KEY, balance INTEGER)")
        conn.exec_driver_sql("INSERT INTO accounts VALUES ('a', 100)")
    engine.store.engine.dispose()

    def balance(h: SagaHarness) -> int:
        with h.engine.store.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT balance FROM accounts")).scalar_one())

    with SagaHarness(Transfer, db_url) as harness:
        crashed = harness.run(crash=Crash("before_commit", state="debit"), resume=False)
        assert crashed.crashed and crashed.status is SagaStatus.STARTED
        assert [e.status.value for e in crashed.history] == ["executing"]
        assert balance(harness) == 100
        done = harness.resume(crashed.saga_id)
        assert done.status is SagaStatus.COMPLETED
        assert balance(harness) == 90
