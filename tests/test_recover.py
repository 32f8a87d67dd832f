"""Recovery and versioning: incomplete sagas resume on the definition they started on."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from statesaga import Hooks, ResumeError, Retry, Saga, SagaEngine, SagaStatus, StepContext, step
from statesaga.testing import SimulatedCrash, check_saga

ran: list[str] = []


class ShipV1(Saga):
    name = "ship"
    version = 1

    @step
    def pack(self, ctx: StepContext) -> str:
        ran.append("v1.pack")
        return "box"

    @step
    def post(self, ctx: StepContext) -> None:
        ran.append("v1.post")


class ShipV2(Saga):
    name = "ship"
    version = 2

    @step
    def pack(self, ctx: StepContext) -> str:
        ran.append("v2.pack")
        return "crate"

    @step
    def insure(self, ctx: StepContext) -> None:
        ran.append("v2.insure")

    @step
    def post(self, ctx: StepContext) -> None:
        ran.append("v2.post")


#: A saga's own data; the lease columns (owner, lease_until, lease_epoch) are the
#: runners' bookkeeping: claiming a saga to look at it bumps its epoch.
SAGA_COLUMNS = (
    "saga_id, name, version, fingerprint, status, state, attempt, seq, input, error, "
    "due_at, created_at, updated_at"
)


def rows(engine: SagaEngine, saga_id: str) -> tuple[object, list[object]]:
    """A saga's row (its own data) and its log, as stored."""
    with engine.store.engine.connect() as conn:
        row = conn.execute(
            sa.text(f"SELECT {SAGA_COLUMNS} FROM statesaga_sagas WHERE saga_id = :s"),
            {"s": saga_id},
        ).one()
        log = conn.execute(
            sa.text("SELECT * FROM statesaga_log WHERE saga_id = :s"), {"s": saga_id}
        ).all()
    return tuple(row), [tuple(r) for r in log]


def test_v1_saga_finishes_on_v1_beside_v2(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """A v1 saga in flight resumes on v1 even when v2 is registered beside it, and
    new sagas of either version run on their own definition."""
    ran.clear()
    old = new_engine()
    old.register(ShipV1)
    old.start(ShipV1, None, saga_id="in-flight")
    old.store.engine.dispose()

    new = new_engine()
    new.register(ShipV1, ShipV2)
    report = new.recover()
    assert [r.saga_id for r in report.resumed] == ["in-flight"] and not report.skipped
    assert report.resumed[0].status is SagaStatus.COMPLETED
    assert ran == ["v1.pack", "v1.post"]
    assert new.get("in-flight").results == {"pack": "box", "post": None}
    ran.clear()
    assert new.run(ShipV2, None).status is SagaStatus.COMPLETED
    assert ran == ["v2.pack", "v2.insure", "v2.post"]


def test_unregistered_version_is_reported_and_untouched(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """With only v2 registered, the v1 saga is reported with the version it needs,
    and its row and log stay exactly as they were; other sagas still recover."""
    ran.clear()
    old = new_engine()
    old.register(ShipV1, ShipV2)
    old.start(ShipV1, None, saga_id="needs-v1")
    old.start(ShipV2, None, saga_id="fine-v2")
    before = rows(old, "needs-v1")
    old.store.engine.dispose()

    new = new_engine()
    new.register(ShipV2)
    report = new.recover()
    assert [r.saga_id for r in report.resumed] == ["fine-v2"]
    assert len(report.skipped) == 1
    err = report.skipped[0]
    assert isinstance(err, ResumeError) and err.saga_id == "needs-v1"
    assert "it needs ship v1" in str(err) and "registered versions of ship: v2" in str(err)
    assert rows(new, "needs-v1") == before
    assert ran == ["v2.pack", "v2.insure", "v2.post"]


def test_changed_structure_without_version_bump_is_refused(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """A saga whose stored fingerprint differs from the registered definition of the
    same version is not resumed on it."""
    old = new_engine()
    old.register(ShipV1)
    old.start(ShipV1, None, saga_id="fp")
    old.store.engine.dispose()

    class ShipV1Changed(Saga):
        name = "ship"
        version = 1

        @step
        def pack(self, ctx: StepContext) -> None: ...

        @step
        def weigh(self, ctx: StepContext) -> None: ...

        @step
        def post(self, ctx: StepContext) -> None: ...

    new = new_engine()
    new.register(ShipV1Changed)
    report = new.recover()
    assert not report.resumed
    assert "fingerprint" in report.skipped[0].reason
    assert "register the definition it started on" in report.skipped[0].reason


def test_corrupt_rows_are_reported_and_the_rest_recover(
    new_engine: Callable[..., SagaEngine], db_url: str
) -> None:
    """A row naming an unknown state, or holding unreadable input, is reported and
    left alone; the other incomplete sagas are resumed."""
    engine = new_engine()
    engine.register(OrderSaga(FakeServices()))
    for sid in ("bad-state", "bad-input", "good"):
        engine.start(OrderSaga, OrderRequest("c", 1.0), saga_id=sid)
    with engine.store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE statesaga_sagas SET state = 'teleport' WHERE saga_id = 'bad-state'")
        )
        conn.execute(
            sa.text("UPDATE statesaga_sagas SET input = '{not json' WHERE saga_id = 'bad-input'")
        )
    before = rows(engine, "bad-input")
    report = engine.recover()
    assert [r.saga_id for r in report.resumed] == ["good"]
    reasons = {e.saga_id: e.reason for e in report.skipped}
    assert "its state 'teleport' is not a state of order@v1" in reasons["bad-state"]
    assert "its stored data cannot be read" in reasons["bad-input"]
    assert rows(engine, "bad-input") == before


def test_unknown_saga_name_is_reported(new_engine: Callable[..., SagaEngine]) -> None:
    """A saga whose definition is not registered at all is reported by name."""
    engine = new_engine()
    engine.register(ShipV1)
    engine.start(ShipV1, None, saga_id="orphan")
    engine.store.engine.dispose()
    fresh = new_engine()
    report = fresh.recover()
    assert report.skipped[0].saga_id == "orphan"
    assert "registered versions of ship: none" in report.skipped[0].reason


def test_recover_finishes_compensation(new_engine: Callable[..., SagaEngine]) -> None:
    """A saga stopped while compensating resumes compensating, without re-running
    completed steps or compensations already done."""
    services = FakeServices()
    saga = OrderSaga(services)
    engine = new_engine(sleep=lambda _s: None)
    engine.register(saga)
    services.fail("orders.confirm", times=None)

    # Kill the run inside the refund, through the engine's hooks.
    class CrashInRefund(Hooks):
        def call(self, saga_id, state, attempt, fn, args):  # type: ignore[no-untyped-def]
            if state == "refund_payment":
                raise SimulatedCrash("killed while refunding")
            return fn(*args)

    engine.hooks = CrashInRefund()
    with pytest.raises(SimulatedCrash):
        engine.run(OrderSaga, OrderRequest("c", 5.0), saga_id="comp")
    assert engine.get("comp").status is SagaStatus.COMPENSATING
    engine.store.engine.dispose()

    # A process that starts after the dead one's lease (30 s by default) ran out.
    fresh = new_engine(clock=lambda: time.time() + 60)
    fresh.register(saga)
    report = fresh.recover()
    assert report.resumed[0].status is SagaStatus.FAILED
    history = fresh.history("comp")
    check_saga(OrderSaga.spec, SagaStatus.FAILED, history)
    assert services.count("inventory.release") == {"comp:release_reservation": 1}
    assert services.count("payments.charge") == {"comp:charge_payment": 1}
    refund = [(e.status.value, e.attempt) for e in history if e.step == "charge_payment"][-3:]
    assert refund == [("compensating", 1), ("compensating", 2), ("compensated", 2)]


def test_retry_delay_survives_a_crash(new_engine: Callable[..., SagaEngine]) -> None:
    """A saga waiting for its next attempt stores when it is due; after a crash the
    new engine (once the dead one's lease ran out) waits only for what is left of
    the delay."""
    now = [1000.0]
    waits: list[float] = []

    class Flaky(Saga):
        name = "flaky"
        calls = 0

        @step(retry=Retry(max_attempts=3, initial_delay=60.0))
        def call(self, ctx: StepContext) -> int:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConnectionError("down")
            return Flaky.calls

    def crash_while_sleeping(seconds: float) -> None:
        raise SimulatedCrash(f"killed during a {seconds}s wait")

    engine = new_engine(clock=lambda: now[0], sleep=crash_while_sleeping)
    engine.register(Flaky)
    with pytest.raises(SimulatedCrash):
        engine.run(Flaky, None, saga_id="wait")
    engine.store.engine.dispose()
    assert Flaky.calls == 1

    now[0] += 40.0  # the new process starts 40 s later, after the 30 s lease ran out

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    fresh = new_engine(clock=lambda: now[0], sleep=sleep)
    fresh.register(Flaky)
    assert fresh.resume("wait").status is SagaStatus.COMPLETED
    assert waits == [20.0]
    assert Flaky.calls == 2
