"""The engine through the public API: runs, compensation, retries, idempotency, data."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import attrs
import pytest
import sqlalchemy as sa

from definitions.order import OPERATIONS, OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.trip import Booking, TripRequest, TripSaga
from statesaga import (
    EntryStatus,
    Hooks,
    InvalidInput,
    SagaEngine,
    SagaIdConflict,
    SagaNotFound,
    SagaRun,
    SagaStatus,
    SchemaMissing,
    SerializationError,
    StepContext,
)
from statesaga.store.schema import SCHEMA_VERSION
from statesaga.testing import check_saga

ORDER_STEPS = ["create_order", "charge_payment", "reserve_inventory", "confirm_order"]


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
def order(engine: SagaEngine, services: FakeServices) -> OrderSaga:
    saga = OrderSaga(services)
    engine.register(saga)
    return saga


def entries(engine: SagaEngine, saga_id: str) -> list[tuple[str, str, int]]:
    return [(e.step, e.status.value, e.attempt) for e in engine.history(saga_id)]


def count_commits(engine: SagaEngine) -> Callable[[], int]:
    """Commits from now on: SQLAlchemy ``commit`` events (transactional steps,
    schema) plus the store's own hot-path commits, which bypass them."""
    events = [0]
    base = engine.store.commits

    @sa.event.listens_for(engine.store.engine, "commit")
    def _count(_conn: object) -> None:
        events[0] += 1

    return lambda: events[0] + engine.store.commits - base


def test_happy_path(engine: SagaEngine, order: OrderSaga, services: FakeServices) -> None:
    """Every step runs once, in order; the log pairs each executing with its completion."""
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert run.status is SagaStatus.COMPLETED and run.succeeded
    assert run.error is None and run.created
    assert list(run.results) == ORDER_STEPS
    assert run.results["create_order"].startswith("orders-")
    assert entries(engine, run.saga_id) == [
        (s, status, 1) for s in ORDER_STEPS for status in ("executing", "completed")
    ]
    assert [op for op, _ in services.effects] == [
        "orders.create",
        "payments.charge",
        "inventory.reserve",
        "orders.confirm",
    ]
    got = engine.get(run.saga_id)
    assert got.status is SagaStatus.COMPLETED and got.results == run.results
    check_saga(OrderSaga.spec, run.status, engine.history(run.saga_id))


def test_happy_saga_costs_n_plus_one_commits(engine: SagaEngine, order: OrderSaga) -> None:
    """A happy 4-step saga commits 5 times: start, then one per step completion
    (each also recording the next step's start)."""
    engine.run(OrderSaga, OrderRequest("warm-up", 1.0))  # creates the schema
    commits = count_commits(engine)
    engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert commits() == 5


FAILURE_CASES = {
    "create_order": [("create_order", "failed")],
    "charge_payment": [
        ("create_order", "completed"),
        ("charge_payment", "failed"),
        ("create_order", "compensating"),
        ("create_order", "compensated"),
    ],
    "reserve_inventory": [
        ("create_order", "completed"),
        ("charge_payment", "completed"),
        ("reserve_inventory", "failed"),
        ("charge_payment", "compensating"),
        ("charge_payment", "compensated"),
        ("create_order", "compensating"),
        ("create_order", "compensated"),
    ],
    "confirm_order": [
        ("create_order", "completed"),
        ("charge_payment", "completed"),
        ("reserve_inventory", "completed"),
        ("confirm_order", "failed"),
        ("reserve_inventory", "compensating"),
        ("reserve_inventory", "compensated"),
        ("charge_payment", "compensating"),
        ("charge_payment", "compensated"),
        ("create_order", "compensating"),
        ("create_order", "compensated"),
    ],
}
OPERATION = OPERATIONS


@pytest.mark.parametrize("failing", ORDER_STEPS)
def test_failure_at_each_step_compensates_in_reverse(
    engine: SagaEngine, order: OrderSaga, services: FakeServices, failing: str
) -> None:
    """A step failing for good compensates exactly the completed steps, newest first,
    and the saga ends failed with that step's error."""
    services.fail(OPERATION[failing], times=None)
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert run.status is SagaStatus.FAILED
    assert run.error == f"ServiceError: {OPERATION[failing]} is unavailable"
    log = [(s, st) for s, st, _ in entries(engine, run.saga_id) if st != "executing"]
    # charge_payment is retried (3 attempts): its first two failures are retries,
    # logged apart from the final give-up.
    if failing == "charge_payment":
        assert log[1:3] == [("charge_payment", "retrying")] * 2
        del log[1:3]
    assert log == FAILURE_CASES[failing]
    assert engine.get(run.saga_id).status is SagaStatus.FAILED
    check_saga(OrderSaga.spec, run.status, engine.history(run.saga_id))


def test_compensation_failure_goes_on_and_ends_compensation_failed(
    engine: SagaEngine, order: OrderSaga, services: FakeServices
) -> None:
    """A compensation that fails for good is recorded, the remaining ones still run,
    and the saga ends compensation_failed."""
    services.fail("orders.confirm", times=None)
    services.fail("payments.refund", times=None)
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert run.status is SagaStatus.COMPENSATION_FAILED
    log = [(s, st) for s, st, _ in entries(engine, run.saga_id)]
    assert log[-6:] == [
        ("reserve_inventory", "compensating"),
        ("reserve_inventory", "compensated"),
        ("charge_payment", "compensating"),
        ("charge_payment", "compensation_failed"),
        ("create_order", "compensating"),
        ("create_order", "compensated"),
    ]
    assert services.count("orders.cancel") and services.count("inventory.release")
    check_saga(OrderSaga.spec, run.status, engine.history(run.saga_id))


def test_retry_then_success(engine: SagaEngine, order: OrderSaga, services: FakeServices) -> None:
    """A step failing twice then succeeding completes on attempt 3, with both
    failures logged as retried (not as the final ``failed``), and the saga completes."""
    services.fail("payments.charge", times=2)
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert run.status is SagaStatus.COMPLETED
    charge = [(st, a) for s, st, a in entries(engine, run.saga_id) if s == "charge_payment"]
    assert charge == [
        ("executing", 1),
        ("retrying", 1),
        ("executing", 2),
        ("retrying", 2),
        ("executing", 3),
        ("completed", 3),
    ]


def test_retry_delays_follow_the_policy(
    new_engine: Callable[..., SagaEngine], db_url: str, services: FakeServices
) -> None:
    """The engine waits the policy's exponential delays between attempts."""
    waits: list[float] = []
    now = [1000.0]

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    engine = new_engine(clock=lambda: now[0], sleep=sleep)
    services.fail("payments.charge", times=2)
    engine.register(OrderSaga(services))
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    assert run.status is SagaStatus.COMPLETED
    assert waits == [0.01, 0.02]
    engine.store.engine.dispose()


def test_step_not_in_retry_on_fails_at_once(engine: SagaEngine) -> None:
    """An exception outside the policy's retry_on is not retried."""
    from statesaga import Retry, Saga, step

    class Picky(Saga):
        name = "picky"

        @step(retry=Retry(max_attempts=5, retry_on=(TimeoutError,)))
        def call(self, ctx: StepContext) -> None:
            raise ValueError("bad request")

    engine.register(Picky)
    run = engine.run(Picky, None)
    assert run.status is SagaStatus.FAILED
    assert [(s, a) for _, s, a in entries(engine, run.saga_id)] == [("executing", 1), ("failed", 1)]


def test_idempotent_run(engine: SagaEngine, order: OrderSaga, services: FakeServices) -> None:
    """Running again with the same saga_id returns the existing saga and runs nothing."""
    first = engine.run(OrderSaga, OrderRequest("c-1", 42.0), saga_id="order-1")
    again = engine.run(OrderSaga, OrderRequest("c-1", 42.0), saga_id="order-1")
    assert first.created and not again.created
    assert again.saga_id == "order-1" and again.status is SagaStatus.COMPLETED
    assert again.results == first.results
    assert len(services.effects) == 4
    assert len(engine.history("order-1")) == 8


def test_idempotent_start_then_resume(
    engine: SagaEngine, order: OrderSaga, services: FakeServices
) -> None:
    """start records the saga without running it; a duplicate start returns it;
    resume runs it to the end."""
    started = engine.start(OrderSaga, OrderRequest("c-1", 42.0), saga_id="order-2")
    assert started.status is SagaStatus.STARTED and started.state == "create_order"
    assert engine.history("order-2") == [] and services.effects == []
    dup = engine.start(OrderSaga, OrderRequest("c-1", 42.0), saga_id="order-2")
    assert not dup.created and dup.status is SagaStatus.STARTED
    done = engine.resume("order-2")
    assert done.status is SagaStatus.COMPLETED
    assert len(services.effects) == 4
    assert entries(engine, "order-2")[0] == ("create_order", "executing", 1)


def test_saga_id_taken_by_another_saga_type(engine: SagaEngine, order: OrderSaga) -> None:
    """Reusing a saga id for a different saga type is an error, not a silent return."""
    engine.run(OrderSaga, OrderRequest("c-1", 42.0), saga_id="shared")
    engine.register(TripSaga)
    with pytest.raises(SagaIdConflict, match="'shared' already belongs to a 'order' saga"):
        engine.run(TripSaga, TripRequest("ann", "Oslo", 1, 1000.0), saga_id="shared")


def test_status_while_running(engine: SagaEngine) -> None:
    """While forward steps run the saga is started; while compensating, compensating."""
    from statesaga import Saga, step

    seen: dict[str, SagaStatus] = {}

    class Watcher(Saga):
        name = "watcher"

        @step
        def first(self, ctx: StepContext) -> int:
            return 1

        @first.compensate
        def undo_first(self, ctx: StepContext, result: int) -> None:
            seen["compensating"] = engine.get(ctx.saga_id).status

        @step
        def second(self, ctx: StepContext) -> None:
            seen["running"] = engine.get(ctx.saga_id).status
            raise RuntimeError("boom")

    engine.register(Watcher)
    run = engine.run(Watcher, None)
    assert run.status is SagaStatus.FAILED
    assert seen == {"running": SagaStatus.STARTED, "compensating": SagaStatus.COMPENSATING}


def test_compensations_get_their_steps_results(engine: SagaEngine, services: FakeServices) -> None:
    """Each compensation is handed the result its own step returned (an attrs class
    here, rebuilt from JSON by the step's return annotation)."""
    engine.register(TripSaga(services))
    run = engine.run(TripSaga, TripRequest("ann", "Lisbon", 3, budget=100.0))
    assert run.status is SagaStatus.FAILED
    assert "over the budget" in (run.error or "")
    cancelled = {
        record["operation"]: record["reference"]
        for record in services.records.values()
        if "reference" in record
    }
    assert cancelled == {
        "flights.cancel": run.results["book_flight"].reference,
        "hotels.cancel": run.results["book_hotel"].reference,
        "cars.return": run.results["rent_car"].reference,
    }
    stored = engine.get(run.saga_id).results
    assert isinstance(stored["book_flight"], Booking) and stored == run.results


def test_subclass_inherits_steps() -> None:
    """A subclass of a saga keeps its base's steps and may rename the saga."""

    class Renamed(TripSaga):
        name = "trip-renamed"

    assert [s.name for s in Renamed.spec.steps] == [s.name for s in TripSaga.spec.steps]
    assert Renamed.spec.fingerprint != TripSaga.spec.fingerprint


def test_unserialisable_result_fails_the_step_and_compensates(engine: SagaEngine) -> None:
    """A result that is not JSON fails its step (not retried) with an error naming the
    saga, the step and the type, and the completed steps are compensated."""
    from statesaga import Retry, Saga, step

    undone: list[str] = []

    class Opaque:
        pass

    class Leaky(Saga):
        name = "leaky"

        @step
        def first(self, ctx: StepContext) -> str:
            return "ok"

        @first.compensate
        def undo_first(self, ctx: StepContext, result: str) -> None:
            undone.append(result)

        @step(retry=Retry(max_attempts=3))
        def second(self, ctx: StepContext) -> Opaque:
            return Opaque()

    engine.register(Leaky)
    run = engine.run(Leaky, None, saga_id="leak-1")
    assert run.status is SagaStatus.FAILED
    assert run.error is not None
    assert "saga 'leaky' (id leak-1), second: a value of type" in run.error
    assert "Opaque cannot be stored as JSON" in run.error
    assert undone == ["ok"]
    second = [(st, a) for s, st, a in entries(engine, "leak-1") if s == "second"]
    assert second == [("executing", 1), ("failed", 1)]


def test_bad_input_is_rejected_before_anything_is_written(
    engine: SagaEngine, order: OrderSaga
) -> None:
    """Input of the wrong type, or input that is not JSON, raises and writes nothing:
    not even the schema (reads then say there is none)."""
    with pytest.raises(InvalidInput, match="expects input of type OrderRequest, got dict"):
        engine.run(OrderSaga, {"customer_id": "c-1"}, saga_id="bad-1")
    with pytest.raises(SchemaMissing, match="no statesaga schema in "):
        engine.get("bad-1")

    @attrs.frozen
    class Weird:
        thing: object

    from statesaga import Saga, step

    class AnyInput(Saga):
        name = "any-input"

        @step
        def only(self, ctx: StepContext) -> None: ...

    engine.register(AnyInput)
    with pytest.raises(
        SerializationError, match=r"saga 'any-input' \(id bad-2\), input: a value of type .*Weird"
    ):
        engine.run(AnyInput, Weird(object()), saga_id="bad-2")
    with pytest.raises(SchemaMissing):
        engine.history("bad-2")
    engine.run(AnyInput, None, saga_id="ok")  # a write creates the schema
    with pytest.raises(SagaNotFound, match="no saga with id 'bad-2'"):
        engine.history("bad-2")


def test_history_entries_carry_time_and_results(engine: SagaEngine, order: OrderSaga) -> None:
    """Log entries are numbered from 1, timestamped in order, and completed entries
    carry the step's result."""
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0))
    history = engine.history(run.saga_id)
    assert [e.seq for e in history] == list(range(1, 9))
    assert all(a.at <= b.at for a, b in itertools.pairwise(history))
    done = {e.step: e.result for e in history if e.status is EntryStatus.COMPLETED}
    assert done == dict(run.results)


def test_transactional_step_commits_with_its_transition(engine: SagaEngine) -> None:
    """A transactional step's writes commit with the transition that records it;
    when the step fails, its writes are rolled back."""
    from statesaga import Saga, step

    with engine.store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger (saga_id VARCHAR(64), amount INTEGER)")

    class Ledger(Saga):
        name = "ledger"

        @step(transactional=True)
        def book(self, ctx: StepContext) -> None:
            assert ctx.connection is not None
            ctx.connection.execute(
                sa.text("INSERT INTO ledger VALUES (:s, :a)"), {"s": ctx.saga_id, "a": ctx.input}
            )
            if ctx.input < 0:
                raise ValueError("negative amount")

    engine.register(Ledger)
    ok = engine.run(Ledger, 10, saga_id="tx-ok")
    bad = engine.run(Ledger, -5, saga_id="tx-bad")
    assert ok.status is SagaStatus.COMPLETED and bad.status is SagaStatus.FAILED
    with engine.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT saga_id, amount FROM ledger")).all()
    assert rows == [("tx-ok", 10)]


def test_schema_version_is_recorded(engine: SagaEngine, order: OrderSaga) -> None:
    """The store records its schema version on first use."""
    engine.run(OrderSaga, OrderRequest("c-1", 1.0))
    assert engine.store.schema_version() == SCHEMA_VERSION == 7


def test_resume_leaves_a_saga_a_live_runner_holds(
    new_engine: Callable[..., SagaEngine], services: FakeServices
) -> None:
    """While A drives a saga (its lease alive), B's resume returns the saga as it
    is and writes nothing; A finishes it and the log is one clean run."""
    saga = OrderSaga(services)
    a, b = new_engine(), new_engine()
    a.register(saga)
    b.register(saga)
    a.start(OrderSaga, OrderRequest("c-1", 1.0), saga_id="held")
    seen: list[SagaRun] = []

    class LookElsewhere(Hooks):
        def call(self, saga_id, state, attempt, fn, args):  # type: ignore[no-untyped-def]
            if state == "charge_payment" and not seen:
                seen.append(b.resume(saga_id))
            return fn(*args)

    a.hooks = LookElsewhere()
    assert a.resume("held").status is SagaStatus.COMPLETED
    assert seen[0].status is SagaStatus.STARTED and seen[0].state == "charge_payment"
    check_saga(OrderSaga.spec, SagaStatus.COMPLETED, b.history("held"))
    assert services.count("payments.charge") == {"held:charge_payment": 1}


def test_a_runner_whose_lease_was_taken_over_writes_nothing(
    new_engine: Callable[..., SagaEngine], services: FakeServices
) -> None:
    """A stalls inside a step past its lease; B claims the saga (its epoch grows)
    and finishes it. A's late write is refused by the epoch: A stops without
    raising and without running another step, and the log is B's clean run."""
    now = [1000.0]
    saga = OrderSaga(services)
    a = new_engine(clock=lambda: now[0], lease=10.0)
    b = new_engine(clock=lambda: now[0], lease=10.0)
    a.register(saga)
    b.register(saga)
    a.start(OrderSaga, OrderRequest("c-1", 1.0), saga_id="raced")
    calls: list[str] = []

    class StallPastLease(Hooks):
        def call(self, saga_id, state, attempt, fn, args):  # type: ignore[no-untyped-def]
            calls.append(state)
            if state == "charge_payment" and calls.count(state) == 1:
                now[0] += 60.0  # A stalls for a minute: its 10 s lease runs out
                assert b.resume(saga_id).status is SagaStatus.COMPLETED
            return fn(*args)

    a.hooks = StallPastLease()
    b.hooks = StallPastLease()
    late = a.resume("raced")
    assert late.status is SagaStatus.COMPLETED  # what B made of it; nothing escaped
    # A ran charge_payment once (then was fenced off); B re-ran it and went on.
    assert calls == [
        "create_order",
        "charge_payment",
        "charge_payment",
        "reserve_inventory",
        "confirm_order",
    ]
    check_saga(OrderSaga.spec, SagaStatus.COMPLETED, b.history("raced"))
    epochs = [r.lease_epoch for r in [a.store.get("raced")] if r is not None]
    assert epochs == [2]


def test_sqlalchemy_write_path(engine: SagaEngine, order: OrderSaga) -> None:
    """Drivers without named parameters write through SQLAlchemy connections: the
    same sagas, the same commits, the same idempotent start."""
    engine.store.ensure_schema()
    engine.store._sql = None  # what a positional-parameter driver gets
    commits = count_commits(engine)
    run = engine.run(OrderSaga, OrderRequest("c-1", 42.0), saga_id="via-sa")
    assert run.status is SagaStatus.COMPLETED and commits() == 5
    assert not engine.run(OrderSaga, OrderRequest("c-1", 42.0), saga_id="via-sa").created
    check_saga(OrderSaga.spec, run.status, engine.history("via-sa"))


def test_input_that_could_not_be_resumed_is_refused(engine: SagaEngine, order: OrderSaga) -> None:
    """An input whose fields have the wrong types would come back different (or
    not at all) from storage, so no engine could resume the saga: it is refused at
    start, naming the field and the declared type, and nothing is stored."""
    with pytest.raises(
        InvalidInput, match="field 'customer_id' is int 123, but it is declared str"
    ):
        engine.start(OrderSaga, OrderRequest(123, 5.0), saga_id="typed-1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"expected float @ \$\.total"):
        engine.start(OrderSaga, OrderRequest("c-1", "lots"), saga_id="typed-2")  # type: ignore[arg-type]
    ok = engine.start(OrderSaga, OrderRequest("c-1", 5.0), saga_id="typed-3")
    assert ok.created
    assert [s.saga_id for s in engine.list()] == ["typed-3"]
