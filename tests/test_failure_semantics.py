"""Failure semantics at the edges (issue #10): what an interrupted, poisoned,
hostile or nested saga does. Each case was reproduced failing before its fix;
the numbers are the issue's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import ClassVar

import attrs
import pytest
import sqlalchemy as sa

from statesaga import (
    CorruptSaga,
    Hooks,
    InvalidInput,
    Retry,
    Saga,
    SagaEngine,
    SagaIdConflict,
    SagaStatus,
    SerializationError,
    StepContext,
    step,
)
from tests.conftest import backend


class Charge(Saga):
    """Charge, then ship; the charge is refunded if shipping fails."""

    name = "charge-ship"

    def __init__(self) -> None:
        self.charges = 0
        self.refunds = 0
        self.ship_error: BaseException | None = None

    @step
    def charge(self, ctx: StepContext) -> str:
        self.charges += 1
        return "ch-1"

    @charge.compensate
    def refund(self, ctx: StepContext, charge_id: str) -> None:
        self.refunds += 1

    @step
    def ship(self, ctx: StepContext) -> str:
        if self.ship_error is not None:
            raise self.ship_error
        return "shipped"


def rows(engine: SagaEngine, saga_id: str) -> tuple[object, ...]:
    with engine.store.engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT status, state, attempt, seq FROM statesaga_sagas WHERE saga_id = :s"
                ),
                {"s": saga_id},
            ).one()
        )


# -- (2) cancellation is not failure ------------------------------------------------


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_an_interrupt_leaves_the_saga_where_it_was(
    new_engine: Callable[..., SagaEngine], interrupt: type[BaseException]
) -> None:
    """(2) A step interrupted (Ctrl-C, SystemExit, a cancelled task) is no failure:
    nothing is compensated, the saga stays where it was with an ``interrupted``
    entry saying why, and it finishes on resume (the step made again)."""
    engine = new_engine()
    saga = Charge()
    engine.register(saga)
    saga.ship_error = interrupt()
    with pytest.raises(interrupt):
        engine.run(Charge, None, saga_id="int-1")
    assert engine.get("int-1").status is SagaStatus.STARTED
    assert engine.get("int-1").state == "ship"
    assert saga.refunds == 0
    last = engine.history("int-1")[-1]
    assert (last.step, last.status.value, last.attempt) == ("ship", "interrupted", 1)
    assert (last.error or "").startswith(interrupt.__name__)
    saga.ship_error = None
    assert engine.resume("int-1").status is SagaStatus.COMPLETED
    assert (saga.charges, saga.refunds) == (1, 0)
    ship = [(e.status.value, e.attempt) for e in engine.history("int-1") if e.step == "ship"]
    assert ship == [("executing", 1), ("interrupted", 1), ("executing", 2), ("completed", 2)]


class InterruptAt(Hooks):
    """Ctrl-C at the first ``point`` (``before_commit``/``after_commit``) seen in
    ``state``: the moments a signal can land between two writes."""

    def __init__(self, point: str, state: str) -> None:
        self.point_name = point
        self.state = state
        self.fired = False

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == self.point_name and state == self.state and not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
def test_an_interrupt_right_after_a_retry_is_committed_leaves_the_log_whole(
    new_engine: Callable[..., SagaEngine], point: str
) -> None:
    """(2) Ctrl-C landing just after the commit that schedules a retry: no attempt
    is in flight then, so nothing is logged as interrupted (it used to log one,
    and the saga's log was then no path of its machine: corrupt, never resumed)."""
    failures = iter([RuntimeError("busy")])

    class Flaky(Saga):
        name = "flaky-interrupted"

        @step(retry=Retry(max_attempts=2))
        def call(self, ctx: StepContext) -> str:
            error = next(failures, None)
            if error is not None:
                raise error
            return "ok"

    engine = new_engine()
    engine.register(Flaky)
    engine.hooks = InterruptAt(point, "call")
    with pytest.raises(KeyboardInterrupt):
        engine.run(Flaky, None, saga_id="flaky-1")
    engine.hooks = None
    assert engine.resume("flaky-1").status is SagaStatus.COMPLETED
    statuses = [e.status.value for e in engine.history("flaky-1")]
    if point == "after_commit":
        assert statuses == ["executing", "retrying", "executing", "completed"]


class AsyncShip(Saga):
    """An async step the application's shutdown cancels."""

    name = "async-ship"

    def __init__(self) -> None:
        self.refunds = 0
        self.started = asyncio.Event()

    @step
    async def charge(self, ctx: StepContext) -> str:
        return "ch-1"

    @charge.compensate
    async def refund(self, ctx: StepContext, charge_id: str) -> None:
        self.refunds += 1

    @step
    async def ship(self, ctx: StepContext) -> str:
        self.started.set()
        await asyncio.sleep(3600)
        return "shipped"


def test_shutdown_cancelling_arun_does_not_fail_the_saga(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """(2) An async app shutting down with ``arun`` in flight: the cancelled step is
    not a failure; nothing is compensated; the saga is left to resume."""
    engine = new_engine()
    saga = AsyncShip()
    engine.register(saga)

    async def app() -> None:
        task = asyncio.create_task(engine.arun(AsyncShip, None, saga_id="shut-1"))
        await saga.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(app())
    run = engine.get("shut-1")
    assert (run.status, run.state, saga.refunds) == (SagaStatus.STARTED, "ship", 0)
    last = engine.history("shut-1")[-1]
    assert (last.step, last.status.value) == ("ship", "interrupted")


# -- (3) poison-proof storage -------------------------------------------------------


@pytest.mark.parametrize("text", ["lone \ud800 surrogate", "nul \x00 byte", "x" * 100_000])
def test_an_unstorable_error_message_is_stored_escaped(
    new_engine: Callable[..., SagaEngine], text: str
) -> None:
    """(3) A handler's error whose text has a lone surrogate, a NUL, or is huge is
    stored (escaped, capped with a marker): the saga fails and compensates as any
    other, and ``recover`` of other sagas is not blocked by it."""
    engine = new_engine()
    saga = Charge()
    engine.register(saga)
    saga.ship_error = RuntimeError(text)
    run = engine.run(Charge, None, saga_id="poison")
    assert run.status is SagaStatus.FAILED
    assert saga.refunds == 1
    stored = engine.get("poison").error or ""
    assert stored.startswith("RuntimeError: ")
    assert "\x00" not in stored and len(stored) <= 10_000
    stored.encode("utf-8")  # no lone surrogate left
    saga.ship_error = None
    for i in range(5):
        engine.start(Charge, None, saga_id=f"healthy-{i}")
    assert len(engine.recover().resumed) == 5


def test_one_sagas_trouble_does_not_stop_recovery(new_engine: Callable[..., SagaEngine]) -> None:
    """(3) Whatever goes wrong while recovering one saga (here: every write of it
    fails) is reported with its reason; the other sagas are recovered, and the
    troubled one is left as it was."""
    engine = new_engine()
    engine.register(Charge())
    for sid in ("a", "poison", "b", "c"):
        engine.start(Charge, None, saga_id=sid)
    before = rows(engine, "poison")

    class Broken(Hooks):
        def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
            if saga_id == "poison" and point == "before_commit":
                raise RuntimeError("the disk is full")

    engine.hooks = Broken()
    report = engine.recover()
    assert sorted(r.saga_id for r in report.resumed) == ["a", "b", "c"]
    assert [(e.saga_id, e.reason) for e in report.skipped] == [
        ("poison", "driving it failed: RuntimeError: the disk is full")
    ]
    assert rows(engine, "poison")[:2] == before[:2]


# -- (6) bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "saga_id",
    ["x" * 201, "nul\x00id", "lone\ud800", "", "tab\tid", "line\nbreak"],
    ids=["too-long", "nul", "surrogate", "empty", "tab", "newline"],
)
def test_bad_saga_ids_are_refused_the_same_on_every_backend(
    new_engine: Callable[..., SagaEngine], saga_id: str
) -> None:
    """(6) A saga id that is too long, empty, or has a NUL, a surrogate or a
    control character is ``InvalidInput`` naming the rule, on SQLite as on
    PostgreSQL, and nothing is stored."""
    engine = new_engine()
    engine.register(Charge())
    with pytest.raises(InvalidInput, match="saga id"):
        engine.start(Charge, None, saga_id=saga_id)
    engine.run(Charge, None, saga_id="fine")
    assert [s.saga_id for s in engine.list()] == ["fine"]


def test_deep_input_is_a_serialization_error(new_engine: Callable[..., SagaEngine]) -> None:
    """(6) 100k-deep nesting as input is a ``SerializationError``, not a raw
    ``RecursionError``."""
    engine = new_engine()
    engine.register(Charge())
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="input"):
        engine.start(Charge, deep, saga_id="deep")


class DeepResult(Saga):
    """A step whose result cannot be stored."""

    name = "deep-result"
    calls = 0

    @step(retry=Retry(max_attempts=3))
    def make(self, ctx: StepContext) -> list[object]:
        DeepResult.calls += 1
        deep: list[object] = []
        for _ in range(100_000):
            deep = [deep]
        return deep


def test_a_deep_result_fails_its_step_once_never_retried(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """(6) A result nested 100k deep fails its step with a ``SerializationError``,
    which no retry policy retries (the README promises it)."""
    engine = new_engine()
    engine.register(DeepResult())
    DeepResult.calls = 0
    run = engine.run(DeepResult, None, saga_id="deep-r")
    assert run.status is SagaStatus.FAILED
    assert "SerializationError" in (run.error or "")
    assert DeepResult.calls == 1


@attrs.frozen
class Order:
    """An input."""

    total: float


class Priced(Saga):
    """A saga with a typed input."""

    name = "priced"
    input_type = Order

    @step
    def only(self, ctx: StepContext) -> float:
        return float(ctx.input.total)


def test_reusing_a_saga_id_with_another_input_is_a_conflict(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """(6) Starting a saga with an id already used and the same input returns the
    existing saga; with a different input it raises ``SagaIdConflict`` instead of
    silently returning a saga that is not the one asked for."""
    engine = new_engine()
    engine.register(Priced())
    first = engine.run(Priced, Order(10.0), saga_id="order-1")
    again = engine.run(Priced, Order(10.0), saga_id="order-1")
    assert (again.created, again.results) == (False, first.results)
    with pytest.raises(SagaIdConflict, match="another input"):
        engine.run(Priced, Order(99.0), saga_id="order-1")


# -- (9) nested runs -----------------------------------------------------------------


class Nested(Saga):
    """A transactional step that runs another saga on the same engine."""

    name = "nested"
    engine: SagaEngine | None = None

    @step(transactional=True)
    def outer(self, ctx: StepContext) -> str:
        assert Nested.engine is not None
        return Nested.engine.run(Charge, None, saga_id=f"{ctx.saga_id}-inner").status.value


def test_a_nested_run_in_a_transactional_step(new_engine: Callable[..., SagaEngine]) -> None:
    """(9) On SQLite a nested ``engine.run`` inside a transactional step would wait
    for its own write lock: it fails at once with an error that says why (and the
    outer step fails, compensates, ends). On PostgreSQL it works."""
    engine = new_engine(sleep=lambda _s: None)
    engine.register(Nested(), Charge())
    Nested.engine = engine
    run = engine.run(Nested, None, saga_id="outer")
    if backend() == "sqlite":
        assert run.status is SagaStatus.FAILED
        assert "inside a transactional step" in (run.error or "")
    else:
        assert run.status is SagaStatus.COMPLETED
        assert run.results == {"outer": "completed"}


# -- (5) live = resumed ------------------------------------------------------------


@attrs.frozen
class Receipt:
    """A step's result."""

    rid: str
    amount: float


class Shapes(Saga):
    """Steps whose results change shape through JSON, unless annotated."""

    name = "shapes"
    returns: object = None

    @step
    def unannotated(self, ctx: StepContext):  # type: ignore[no-untyped-def]
        return Shapes.returns


class WrongType(Saga):
    """A step annotated ``-> int`` that returns a float."""

    name = "wrong-type"
    calls = 0

    @step(retry=Retry(max_attempts=3))
    def count(self, ctx: StepContext) -> int:
        WrongType.calls += 1
        return 12.5  # type: ignore[return-value]


@pytest.mark.parametrize(
    "value",
    [Receipt("r1", 5.0), {1: "one"}, (1, 2)],
    ids=["attrs-unannotated", "int-keys", "tuple"],
)
def test_a_result_that_would_change_shape_on_resume_is_refused(
    new_engine: Callable[..., SagaEngine], value: object
) -> None:
    """(5) A result that would come back from storage different (an attrs object
    without a return annotation comes back a dict; int keys come back str; a
    tuple a list) fails its step at once with a ``SerializationError`` naming
    the fix, instead of behaving differently after a crash."""
    engine = new_engine()
    engine.register(Shapes())
    Shapes.returns = value
    run = engine.run(Shapes, None, saga_id="shape")
    assert run.status is SagaStatus.FAILED
    assert "SerializationError" in (run.error or "")
    assert "annotate" in (run.error or "")


def test_a_result_of_another_type_than_annotated_is_refused_once(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """(5) ``12.5`` from a step annotated ``-> int`` would be 12 after a resume:
    a ``SerializationError`` at that step, not retried."""
    engine = new_engine()
    engine.register(WrongType())
    WrongType.calls = 0
    run = engine.run(WrongType, None, saga_id="int")
    assert run.status is SagaStatus.FAILED and WrongType.calls == 1
    assert "would come back from storage as 12" in (run.error or "")


class Ledger(Saga):
    """A later step edits an earlier result in place; the compensation then
    refunds what the earlier step returned."""

    name = "ledger-edit"
    refunded: ClassVar[list[float]] = []

    @step
    def charge(self, ctx: StepContext) -> dict[str, float]:
        return {"amount": 50.0}

    @charge.compensate
    def refund(self, ctx: StepContext, result: dict[str, float]) -> None:
        Ledger.refunded.append(result["amount"])

    @step
    def meddle(self, ctx: StepContext) -> None:
        charge = ctx.results["charge"]
        charge["amount"] = 0.0  # in place: live only, unless the runner hands copies

    @step
    def finish(self, ctx: StepContext) -> None:
        raise RuntimeError("no")


def test_a_step_editing_a_result_in_place_changes_nothing(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """(5) What handlers receive live is what they would receive after a resume: a
    step that edits an earlier result in place does not change what the
    compensation is handed (50, as a resume would hand it, not 0)."""
    engine = new_engine()
    engine.register(Ledger())
    Ledger.refunded = []
    run = engine.run(Ledger, None, saga_id="edit")
    assert run.status is SagaStatus.FAILED
    assert Ledger.refunded == [50.0]


# -- (7) one clock --------------------------------------------------------------------


class Timed(Saga):
    """A saga with a deadline of 300 s from its start."""

    name = "timed"
    deadline = 300.0

    @step
    def only(self, ctx: StepContext) -> str:
        return "done"


@pytest.mark.skipif(backend() != "postgresql", reason="SQLite serves one machine, one clock")
@pytest.mark.parametrize("skew", [-600.0, 600.0], ids=["slow", "fast"])
def test_a_skewed_process_clock_does_not_move_a_deadline(
    new_engine: Callable[..., SagaEngine], skew: float
) -> None:
    """(7) A saga started by a process whose clock is 10 minutes off, with a
    300 s deadline, is resumed by a correct process and completes: both read
    time off the database server, so the deadline is where it belongs."""
    off = new_engine(clock=lambda: time.time() + skew, db_clock=True)
    off.register(Timed())
    off.start(Timed, None, saga_id="skewed")
    right = new_engine()
    right.register(Timed())
    assert right.resume("skewed").status is SagaStatus.COMPLETED
    created = right.store.get("skewed")
    assert created is not None and abs(created.created_at - time.time()) < 60


# -- (4) corruption detected, never acted on -------------------------------------------


def tamper(engine: SagaEngine, sql: str) -> None:
    with engine.store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


@pytest.fixture
def charged(new_engine: Callable[..., SagaEngine]) -> SagaEngine:
    """An engine with one finished saga ``done`` and one ``open`` stopped at ``ship``."""
    engine = new_engine()
    saga = Charge()
    engine.register(saga)
    engine.run(Charge, None, saga_id="done")
    saga.ship_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        engine.run(Charge, None, saga_id="open")
    saga.ship_error = None
    return engine


def test_an_unknown_status_is_corrupt_not_a_raw_error(charged: SagaEngine) -> None:
    """(4) A row whose status is not a status is ``CorruptSaga`` from ``get`` and
    ``history`` (not a raw ``ValueError``), naming the saga and the value."""
    tamper(charged, "UPDATE statesaga_sagas SET status = 'garbage' WHERE saga_id = 'done'")
    with pytest.raises(CorruptSaga, match=r"'done'.*'garbage'"):
        charged.get("done")
    with pytest.raises(CorruptSaga, match="'done'"):
        charged.history("done")


def test_unreadable_result_json_is_corrupt(charged: SagaEngine) -> None:
    """(4) A stored result that is not JSON is ``CorruptSaga`` from ``get`` and
    ``history`` (not a raw ``JSONDecodeError``)."""
    tamper(charged, "UPDATE statesaga_log SET result = '{nope' WHERE saga_id = 'done' AND seq = 2")
    with pytest.raises(CorruptSaga, match="entry 2"):
        charged.get("done")
    with pytest.raises(CorruptSaga, match="entry 2"):
        charged.history("done")


def test_a_log_with_entries_removed_is_not_resumed(charged: SagaEngine) -> None:
    """(4) Log rows deleted and the rest renumbered (as if ``charge`` never ran):
    ``get`` and ``resume`` refuse the saga as corrupt and change nothing, instead
    of resuming it as if the step never ran."""
    tamper(charged, "DELETE FROM statesaga_log WHERE saga_id = 'open' AND seq IN (1, 2)")
    tamper(charged, "UPDATE statesaga_log SET seq = seq - 2 WHERE saga_id = 'open'")
    tamper(charged, "UPDATE statesaga_sagas SET seq = seq - 2 WHERE saga_id = 'open'")
    before = rows(charged, "open")
    with pytest.raises(
        CorruptSaga, match="entry 1 starts at 'ship', but the machine enters 'charge'"
    ):
        charged.get("open")
    with pytest.raises(CorruptSaga):
        charged.resume("open")
    assert rows(charged, "open") == before


def test_a_row_that_contradicts_itself_is_reported_and_the_rest_recover(
    charged: SagaEngine,
) -> None:
    """(4) A ``started`` row whose state says ``completed`` is reported by
    ``recover`` as corrupt; the other sagas recover."""
    tamper(charged, "UPDATE statesaga_sagas SET state = 'completed' WHERE saga_id = 'open'")
    for i in range(3):
        charged.start(Charge, None, saga_id=f"fine-{i}")
    report = charged.recover()
    assert sorted(r.saga_id for r in report.resumed) == ["fine-0", "fine-1", "fine-2"]
    assert [type(e) for e in report.skipped] == [CorruptSaga]
    assert report.skipped[0].saga_id == "open"
