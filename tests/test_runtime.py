"""The runtime inside one process: workers, parked timers, recovery beside live
workers, many threads on one engine, closing under load, the schema's upgrade.

Multi-process behaviour (leases taken over after SIGKILL and SIGSTOP) is in
``test_workers_processes.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from statesaga import (
    EngineClosed,
    Retry,
    Saga,
    SagaEngine,
    SagaStatus,
    SchemaVersionError,
    StepContext,
    step,
)
from statesaga.store.schema import SCHEMA_VERSION
from tests.conftest import backend

#: An upper bound for things that take well under a second: a guard against a
#: hang, not a timing assertion.
PATIENCE = 60.0


def wait_until(done: Callable[[], bool], what: str) -> None:
    """Poll ``done`` until it holds; fail after ``PATIENCE`` seconds."""
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


class Counted(Saga):
    """Two steps that count their calls per idempotency key, thread-safely."""

    name = "counted"

    def __init__(self, pause: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.pause = pause

    def _count(self, ctx: StepContext) -> None:
        with self.lock:
            self.calls[ctx.idempotency_key] += 1
        time.sleep(self.pause)

    @step
    def first(self, ctx: StepContext) -> int:
        self._count(ctx)
        return 1

    @first.compensate
    def undo_first(self, ctx: StepContext, result: int) -> None:
        self._count(ctx)

    @step
    def second(self, ctx: StepContext) -> int:
        self._count(ctx)
        return 2


def test_started_sagas_run_on_a_worker(new_engine: Callable[..., SagaEngine]) -> None:
    """``start`` commits and returns at once; a worker in the same process runs the
    saga (woken by the start, not by a poll), and stops cleanly."""
    engine = new_engine()
    saga = Counted()
    engine.register(saga)
    with engine.worker(concurrency=4, poll=30.0):
        started = [engine.start(Counted, None, saga_id=f"w-{i}") for i in range(20)]
        assert all(s.status is SagaStatus.STARTED for s in started)
        wait_until(
            lambda: all(engine.get(f"w-{i}").status.is_terminal for i in range(20)),
            "the worker to finish 20 sagas",
        )
    assert {engine.get(f"w-{i}").status for i in range(20)} == {SagaStatus.COMPLETED}
    assert set(saga.calls.values()) == {1}


@pytest.mark.skipif(
    backend() != "postgresql",
    reason="needs the PostgreSQL server (on SQLite a claim holds the write lock, so a "
    "heartbeat waits for it to commit)",
)
def test_a_heartbeat_during_a_claim_loses_none_of_the_claimed_sagas(
    new_engine: Callable[..., SagaEngine],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lease heartbeat that runs while a worker's claim is still uncommitted does
    not find the claimed sagas in the database yet; it must not call them lost. (Seen
    under load: "lease on saga ... lost (another runner holds it now)" for sagas no
    one else held; their runs stopped and sat out their leases before anyone drove
    them again.)"""
    engine = new_engine()
    saga = Counted()
    engine.register(saga)
    for i in range(3):
        engine.start(Counted, None, saga_id=f"h-{i}")
    runner = engine._runner
    begin = runner.begin

    def begin_then_heartbeat(run: Any, tx: Any) -> None:
        begin(run, tx)
        # Still inside the claim's transaction: exactly where a heartbeat can land.
        engine._leases.renew()

    monkeypatch.setattr(runner, "begin", begin_then_heartbeat)
    with caplog.at_level(logging.WARNING, logger="statesaga"), engine.worker(concurrency=3):
        wait_until(
            lambda: all(engine.get(f"h-{i}").status.is_terminal for i in range(3)),
            "the worker to finish 3 sagas",
        )
    assert not [r.message for r in caplog.records if "lost" in r.message]
    assert {engine.get(f"h-{i}").status for i in range(3)} == {SagaStatus.COMPLETED}
    assert set(saga.calls.values()) == {1}


class Flaky(Saga):
    """Fails its first attempt, then succeeds after a 2 s retry delay."""

    name = "flaky-delay"

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()

    @step(retry=Retry(max_attempts=2, initial_delay=2.0))
    def call(self, ctx: StepContext) -> int:
        with self.lock:
            self.attempts[ctx.saga_id] += 1
            n = self.attempts[ctx.saga_id]
        if n == 1:
            raise ConnectionError("down")
        return n


def test_a_retry_delay_holds_no_thread(new_engine: Callable[..., SagaEngine]) -> None:
    """500 sagas each waiting 2 s between attempts, on one worker of concurrency 8:
    while they wait, every one is parked in the database (due time set, no owner)
    and the worker drives none of them; then all finish, each attempted twice.
    Serially holding a thread each, the wait alone would take 500 * 2 s / 8 = 125 s."""
    engine = new_engine()
    saga = Flaky()
    engine.register(saga)
    n = 500
    began = time.monotonic()
    with engine.worker(concurrency=8) as worker:
        for i in range(n):
            engine.start(Flaky, None, saga_id=f"f-{i:03}")

        def parked() -> int:
            with engine.store.engine.connect() as conn:
                return int(
                    conn.execute(
                        sa.text(
                            "SELECT count(*) FROM statesaga_sagas WHERE due_at IS NOT NULL "
                            "AND owner IS NULL AND status = 'started'"
                        )
                    ).scalar_one()
                )

        wait_until(
            lambda: parked() + engine.store.list(status="completed", limit=n).__len__() >= n,
            "every saga to be parked or done",
        )
        if parked() == n:  # all waiting at once: the worker lets go of every one
            # (a drive thread returns just after its park commits: allow it that)
            wait_until(lambda: not worker._busy, "the worker to hold no parked saga")
        wait_until(lambda: len(engine.store.list(status="completed", limit=n)) == n, "all done")
    elapsed = time.monotonic() - began
    print(f"\n500 sagas with a 2 s retry delay, concurrency 8: {elapsed:.1f} s")
    assert elapsed < 60, "retry delays must not hold the worker's threads"
    assert set(saga.attempts.values()) == {2}


def test_recover_in_a_loop_beside_busy_workers(new_engine: Callable[..., SagaEngine]) -> None:
    """While 4 workers (4 engines, as 4 processes would be) run 200 sagas,
    ``recover()`` runs again and again on a fifth: it never raises, never reports a
    saga another runner drives as skipped, and no handler runs twice."""
    saga = Counted(pause=0.002)
    engines = [new_engine() for _ in range(5)]
    for e in engines:
        e.register(saga)
    workers = [e.worker(concurrency=4, poll=0.05).start() for e in engines[:4]]
    try:
        for i in range(200):
            engines[i % 4].start(Counted, None, saga_id=f"r-{i:03}")
        reports = []
        while len(reports) < 20 or len(engines[4].list(status="completed", limit=200)) < 200:
            reports.append(engines[4].recover())
            assert len(reports) < 10_000
    finally:
        for w in workers:
            w.stop()
    assert all(not r.skipped for r in reports), [r.skipped for r in reports if r.skipped][:3]
    assert Counter(saga.calls.values()) == Counter({1: 400})
    assert sum(len(r.resumed) for r in reports) < 200, "the workers drove some of them"


def test_sixty_four_threads_share_one_engine(new_engine: Callable[..., SagaEngine]) -> None:
    """64 threads run sagas and call ``get``/``list`` on one engine at once (its
    pool holds 5 connections, 10 more on demand): none waits for a connection
    held by an idle thread, none fails."""
    engine = new_engine()
    saga = Counted()
    engine.register(saga)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(5):
                run = engine.run(Counted, None, saga_id=f"t{t}-{i}")
                assert engine.get(run.saga_id).status is SagaStatus.COMPLETED
                engine.list(limit=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not errors, errors[:3]
    assert len(engine.list(limit=1000)) == 320


def test_close_while_threads_run_sagas(new_engine: Callable[..., SagaEngine]) -> None:
    """``close()`` while 16 threads run sagas: no crash; each thread either finished
    its saga or got ``EngineClosed``; every saga is terminal or left resumable, and
    a fresh engine finishes those."""
    engine = new_engine()
    saga = Counted()
    engine.register(saga)
    outcomes: list[str] = []
    go = threading.Event()

    def work(t: int) -> None:
        go.wait()
        for i in range(50):
            try:
                engine.run(Counted, None, saga_id=f"c{t}-{i}")
                outcomes.append("done")
            except EngineClosed:
                outcomes.append("closed")
                return
            except Exception as exc:  # anything else is a failure of close()
                outcomes.append(f"{type(exc).__name__}: {exc}")
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    go.set()
    wait_until(lambda: len(outcomes) >= 20, "some sagas to finish")
    engine.close()
    for t in threads:
        t.join(PATIENCE)
    assert set(outcomes) <= {"done", "closed"}, sorted(set(outcomes))
    assert "closed" in outcomes
    fresh = new_engine()
    fresh.register(saga)
    fresh.recover()
    statuses = {s.status for s in fresh.list(limit=1000)}
    assert statuses == {SagaStatus.COMPLETED}


class AsyncClientSaga(Saga):
    """Async handlers sharing one long-lived client bound to the loop it was made on."""

    name = "async-client"

    def __init__(self) -> None:
        self.loops: set[int] = set()

    @step
    async def first(self, ctx: StepContext) -> int:
        self.loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return 1

    @step
    async def second(self, ctx: StepContext) -> int:
        self.loops.add(id(asyncio.get_running_loop()))
        return 2


def test_async_handlers_share_one_loop_in_sync_runs(new_engine: Callable[..., SagaEngine]) -> None:
    """A sync ``run`` of an async saga runs every handler, across sagas, on one
    long-lived event loop (not a new one per call), so a client kept by the saga
    stays usable."""
    engine = new_engine()
    saga = AsyncClientSaga()
    engine.register(saga)
    for i in range(3):
        assert engine.run(AsyncClientSaga, None, saga_id=f"a-{i}").succeeded
    assert len(saga.loops) == 1


def test_async_worker_runs_handlers_on_the_applications_loop(
    new_engine: Callable[..., SagaEngine],
) -> None:
    """``async with engine.worker()``: async handlers run as tasks on the
    application's own event loop."""
    engine = new_engine()
    saga = AsyncClientSaga()
    engine.register(saga)

    async def app() -> int:
        async with engine.worker(concurrency=4):
            for i in range(5):
                await engine.astart(AsyncClientSaga, None, saga_id=f"aw-{i}")
            deadline = time.monotonic() + PATIENCE
            while len(engine.list(status="completed", limit=10)) < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        return id(asyncio.get_running_loop())

    loop_id = asyncio.run(app())
    assert saga.loops == {loop_id}


@pytest.mark.parametrize("race", range(30))
def test_schema_is_created_once_by_racing_engines(db_url: str, race: int) -> None:
    """Eight engines creating the schema at once on a fresh database: one creates
    it, the others find it; no error, one version row. Thirty races, because the
    SQLite one (eight connections switching a new file to WAL) lost about one in
    twelve before the switch was retried: SQLite answers it "database is locked"
    at once, without waiting the busy timeout."""
    engines = [SagaEngine(db_url) for _ in range(8)]
    errors: list[BaseException] = []
    go = threading.Barrier(8)

    def up(e: SagaEngine) -> None:
        try:
            go.wait()
            e.upgrade()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    try:
        assert not errors, errors
        with engines[0].store.engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version FROM statesaga_schema")).all()
        assert [v for (v,) in versions] == [SCHEMA_VERSION]
    finally:
        for e in engines:
            e.close()


def test_an_older_schema_is_upgraded_in_place(new_engine: Callable[..., SagaEngine]) -> None:
    """A version-1 database (no lease columns, no outbox) with a saga in flight is upgraded in
    place by ``upgrade()``: its saga is kept and finishes; reads refuse the old
    schema until then, and a newer or unknown version is refused, unchanged."""
    engine = new_engine()
    engine.register(OrderSaga(FakeServices()))
    engine.start(OrderSaga, OrderRequest("c", 1.0), saga_id="old")
    with engine.store.engine.begin() as conn:
        # What versions 6 (claim indexes), 4 (waits), 3 (choreography) and 2 (leases)
        # added goes.
        for index in ("ready", "wakeup"):
            conn.exec_driver_sql(f"DROP INDEX statesaga_sagas_{index}")
        conn.exec_driver_sql("DROP TABLE statesaga_signals")
        conn.exec_driver_sql("DROP INDEX statesaga_sagas_waiting")
        for column in ("owner", "lease_until", "lease_epoch"):
            conn.exec_driver_sql(f"ALTER TABLE statesaga_sagas DROP COLUMN {column}")
        for column in (
            "waiting_for",
            "waiting_key",
            "wait_until",
            "request",
            "request_by",
            "request_reason",
        ):
            conn.exec_driver_sql(f"ALTER TABLE statesaga_sagas DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE statesaga_outbox")
        conn.exec_driver_sql("DROP TABLE statesaga_inbox")
        conn.exec_driver_sql("DELETE FROM statesaga_schema")
        conn.exec_driver_sql("INSERT INTO statesaga_schema VALUES (1, 0)")
    old = new_engine()
    old.register(OrderSaga(FakeServices()))
    with pytest.raises(
        SchemaVersionError, match=f"older than this statesaga's {SCHEMA_VERSION}; upgrade it"
    ):
        old.get("old")
    assert old.upgrade() == (1, SCHEMA_VERSION)
    assert old.upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert old.resume("old").status is SagaStatus.COMPLETED

    with old.store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO statesaga_schema VALUES (99, 0)")
    with pytest.raises(SchemaVersionError, match="version 99, newer than this statesaga"):
        new_engine().upgrade()
    with old.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM statesaga_schema")
    with pytest.raises(SchemaVersionError, match="no schema version is recorded"):
        new_engine().upgrade()
    with old.store.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO statesaga_schema VALUES (0, 0)")
    with pytest.raises(SchemaVersionError, match="version 0, which no statesaga ever wrote"):
        new_engine().upgrade()


class Capped(Saga):
    """A step that fails once; its policy waits at most 5 s between attempts."""

    name = "capped"
    calls = 0

    @step(retry=Retry(max_attempts=2, initial_delay=5.0, max_delay=5.0))
    def call(self, ctx: StepContext) -> int:
        Capped.calls += 1
        if Capped.calls == 1:
            raise ConnectionError("down")
        return Capped.calls


@pytest.mark.parametrize(
    ("later", "waits_wanted"), [(3600.0, [5.0]), (float("inf"), [])], ids=["an-hour", "infinite"]
)
def test_a_stored_due_time_is_capped_by_the_policy(
    new_engine: Callable[..., SagaEngine], later: float, waits_wanted: list[float]
) -> None:
    """A saga parked at a retry delay whose stored due time is absurd (a process
    whose clock ran an hour fast wrote it) is waited for no longer than the
    policy's ``max_delay``; a due time that is not a number counts as due now."""
    waits: list[float] = []
    engine = new_engine(sleep=waits.append, db_clock=False)
    engine.register(Capped())
    Capped.calls = 0
    with engine.worker(concurrency=1) as worker:
        engine.start(Capped, None, saga_id="cap")
        wait_until(lambda: engine.store.get("cap").due_at is not None, "the saga to park")  # type: ignore[union-attr]
        worker.stop()
    with engine.store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE statesaga_sagas SET due_at = :due WHERE saga_id = 'cap'"),
            {"due": time.time() + later},
        )
    assert engine.resume("cap").status is SagaStatus.COMPLETED
    assert [round(w, 3) for w in waits] == waits_wanted
