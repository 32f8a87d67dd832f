"""Worker throughput on PostgreSQL against a plain-psycopg floor, measured in one run.

What it measures
----------------
``N`` order-shaped sagas (4 steps) are stored as started, then ``W`` worker
processes (``engine.worker(concurrency=C)``) run them all; sagas/s is N over
the time from the workers' start signal to the last saga's completion. Each
handler is ``async`` and awaits 5 ms of simulated I/O (``--io-ms``), or, in the
CPU-bound variant (``--io-ms 0``), does nothing.

The floor, in the same run and on the same tables (a fresh PostgreSQL schema
each, created from statesaga's own metadata): ``W`` processes of plain psycopg,
each a claim loop handing sagas to ``C`` threads, doing statesaga's commits
and no more — a batched ``FOR UPDATE SKIP LOCKED`` claim, the first attempt's
entry, then per step the same sleep and one fenced update plus log inserts.
So both sides do the same I/O, commits and concurrency; statesaga's overhead
(its machine, journal, codec, leases, handler loop) is what the ratio shows.

The latency part: one idle worker process; the parent starts a saga, waits for
it to end, and repeats; start-to-first-step is the first handler's start time
(stamped by the worker) minus the time just before ``start`` was called. The
worker hears of the saga through PostgreSQL's ``NOTIFY``.

Targets (issue #9): ratio >= 0.6 at every worker count; 2 workers >= 1.6 x one
on the CPU-bound variant; latency p50 <= 10 ms, p99 <= 50 ms.

How to run
----------
    python benchmarks/workers.py                       # 1, 2, 4 workers; 5 ms I/O
    python benchmarks/workers.py --io-ms 0 --workers 1 2
    python benchmarks/workers.py --latency-only
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks._postgres import drop_schema, fresh_schema, libpq  # noqa: E402
from statesaga import Saga, SagaEngine, StepContext, step  # noqa: E402
from statesaga.store.schema import metadata  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IO = float(os.environ.get("STATESAGA_BENCH_IO", "0.005"))


class BenchOrder(Saga):
    """The order saga's shape: four async steps, each awaiting ``IO`` seconds."""

    name = "bench-order"

    async def _io(self) -> None:
        if IO:
            await asyncio.sleep(IO)

    @step
    async def create_order(self, ctx: StepContext) -> float:
        started = time.time()
        await self._io()
        return started

    @create_order.compensate
    async def cancel_order(self, ctx: StepContext, result: float) -> None: ...

    @step
    async def charge_payment(self, ctx: StepContext) -> str:
        await self._io()
        return "payment-0123456789"

    @charge_payment.compensate
    async def refund_payment(self, ctx: StepContext, result: str) -> None: ...

    @step
    async def reserve_inventory(self, ctx: StepContext) -> str:
        await self._io()
        return "inventory-0123456789"

    @step
    async def confirm_order(self, ctx: StepContext) -> None:
        await self._io()


# -- databases -------------------------------------------------------------------


def preload(url: str, n: int) -> None:
    """N started sagas, as ``engine.start`` stores them (one multi-row insert)."""
    engine = SagaEngine(url)
    engine.register(BenchOrder())
    spec = BenchOrder.spec
    now = time.time()
    rows = [
        {
            "saga_id": f"s-{i:06}",
            "name": spec.name,
            "version": spec.version,
            "fingerprint": spec.fingerprint,
            "status": "started",
            "state": "create_order",
            "attempt": 0,
            "seq": 0,
            "input": "null",
            "error": None,
            "due_at": None,
            "created_at": now + i * 1e-6,
            "updated_at": now,
            "owner": None,
            "lease_until": None,
            "lease_epoch": 0,
        }
        for i in range(n)
    ]
    sagas = metadata.tables["statesaga_sagas"]
    with engine.store.engine.begin() as conn:
        conn.execute(sagas.insert(), rows)
    engine.close()


def completed(url: str) -> int:
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM statesaga_sagas WHERE status = 'completed'"
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- the two sides ------------------------------------------------------------------


def statesaga_worker(url: str, concurrency: int, go: Any, io: float, done: Any) -> None:
    """A worker process: statesaga's own worker until the parent says every saga is
    done (it does not poll the database for that itself: the floor does not either)."""
    global IO
    IO = io
    engine = SagaEngine(url, pool_size=WRITERS // 2 + 2)  # writers: size + overflow - 4
    engine.register(BenchOrder())
    worker = engine.worker(concurrency=concurrency, poll=0.02)
    go.wait()
    worker.start()
    done.wait()
    worker.stop()
    engine.close()


#: Connections each side commits on per process (statesaga: its engine's writers).
WRITERS = 12

FLOOR_SQL = {
    "claim": (
        "UPDATE statesaga_sagas SET owner = %(owner)s, lease_until = %(until)s, "
        "lease_epoch = lease_epoch + 1 WHERE saga_id IN (SELECT saga_id FROM statesaga_sagas "
        "WHERE status IN ('started', 'compensating') AND (owner IS NULL OR lease_until < %(now)s) "
        "AND (due_at IS NULL OR due_at <= %(now)s) ORDER BY created_at LIMIT %(limit)s "
        "FOR UPDATE SKIP LOCKED) RETURNING saga_id, seq, lease_epoch"
    ),
    "update": (
        "UPDATE statesaga_sagas SET status = %s, state = %s, attempt = %s, seq = %s, error = %s, "
        "due_at = %s, updated_at = %s, owner = %s, lease_until = %s, waiting_for = %s, "
        "waiting_key = %s, wait_until = %s WHERE saga_id = %s AND seq = %s AND lease_epoch = %s"
    ),
    "log": (
        "INSERT INTO statesaga_log (saga_id, seq, step, status, attempt, result, error, at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    ),
}
STEPS = ("create_order", "charge_payment", "reserve_inventory", "confirm_order")


def floor_worker(url: str, concurrency: int, go: Any, io: float, done: Any) -> None:
    """A floor process: the same claims, commits and sleeps in plain psycopg."""
    owner = f"floor-{os.getpid()}"
    info = libpq(url)
    # As many connections as statesaga's worker may commit on at once (its writers).
    spare: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for _ in range(WRITERS):
        spare.put(psycopg.connect(info))

    def drive(saga_id: str, seq: int, epoch: int) -> None:
        c = spare.get()
        try:
            commit_saga(c, saga_id, seq, epoch)
        finally:
            spare.put(c)

    def commit_saga(c: Any, saga_id: str, seq: int, epoch: int) -> None:
        with c.cursor() as cur:
            now = time.time()
            cur.execute(
                FLOOR_SQL["update"],
                (
                    "started",
                    STEPS[0],
                    1,
                    seq + 1,
                    None,
                    None,
                    now,
                    owner,
                    now + 30,
                    None,
                    None,
                    None,
                    saga_id,
                    seq,
                    epoch,
                ),
            )
            cur.execute(
                FLOOR_SQL["log"], (saga_id, seq + 1, STEPS[0], "executing", 1, None, None, now)
            )
            c.commit()
            seq += 1
            for k, name in enumerate(STEPS):
                if io:
                    time.sleep(io)
                now = time.time()
                last = k == len(STEPS) - 1
                state = "completed" if last else STEPS[k + 1]
                cur.execute(
                    FLOOR_SQL["update"],
                    (
                        "completed" if last else "started",
                        state,
                        0 if last else 1,
                        seq + (1 if last else 2),
                        None,
                        None,
                        now,
                        None if last else owner,
                        None if last else now + 30,
                        None,
                        None,
                        None,
                        saga_id,
                        seq,
                        epoch,
                    ),
                )
                rows = [(saga_id, seq + 1, name, "completed", 1, '"r"', None, now)]
                if not last:
                    rows.append((saga_id, seq + 2, STEPS[k + 1], "executing", 1, None, None, now))
                cur.executemany(FLOOR_SQL["log"], rows)
                c.commit()
                seq += len(rows)

    pool = concurrent.futures.ThreadPoolExecutor(concurrency)
    busy: set[concurrent.futures.Future[None]] = set()
    claimer = psycopg.connect(info)
    go.wait()
    while True:
        busy = {f for f in busy if not f.done()}
        free = concurrency - len(busy)
        rows = []
        if free:
            now = time.time()
            rows = claimer.execute(
                FLOOR_SQL["claim"], {"owner": owner, "until": now + 30, "now": now, "limit": free}
            ).fetchall()
            claimer.commit()
        for saga_id, seq, epoch in rows:
            busy.add(pool.submit(drive, saga_id, seq, epoch))
        if not rows:
            if not busy:
                break
            concurrent.futures.wait(busy, timeout=0.02, return_when="FIRST_COMPLETED")
    pool.shutdown()
    claimer.close()


def measure(side: str, url: str, workers: int, concurrency: int, n: int, io: float) -> float:
    """Sagas/s of ``workers`` processes of one side over ``n`` preloaded sagas."""
    name, scoped = fresh_schema(url)
    try:
        preload(scoped, n)
        ctx = multiprocessing.get_context("fork")
        go, done = ctx.Event(), ctx.Event()
        target = statesaga_worker if side == "statesaga" else floor_worker
        procs = [
            ctx.Process(target=target, args=(scoped, concurrency, go, io, done))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        time.sleep(0.5)  # let them connect before the clock starts
        began = time.perf_counter()
        go.set()
        while completed(scoped) < n:
            time.sleep(0.005)
        elapsed = time.perf_counter() - began
        done.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        return n / elapsed
    finally:
        drop_schema(url, name)


def latency(url: str, samples: int) -> list[float]:
    """Start-to-first-step latencies (ms) with one idle worker process."""
    name, scoped = fresh_schema(url)
    ctx = multiprocessing.get_context("fork")
    go, done = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=statesaga_worker, args=(scoped, 8, go, 0.0, done))
    proc.start()
    go.set()
    engine = SagaEngine(scoped)
    engine.register(BenchOrder())
    out = []
    try:
        time.sleep(0.5)
        for i in range(samples):
            time.sleep(0.02)  # the worker is idle again
            before = time.time()
            engine.start(BenchOrder, None, saga_id=f"lat-{i}")
            while not (run := engine.get(f"lat-{i}")).status.is_terminal:
                time.sleep(0.002)
            out.append((run.results["create_order"] - before) * 1000)
    finally:
        done.set()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
        engine.close()
        drop_schema(url, name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=DEFAULT_PG_URL)
    p.add_argument("--n", type=int, default=2000, help="sagas per measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--io-ms", type=float, default=5.0, help="simulated I/O per handler")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--latency-samples", type=int, default=200)
    p.add_argument("--latency-only", action="store_true")
    args = p.parse_args(argv)
    io = args.io_ms / 1000
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, PostgreSQL at {args.pg_url}")
    if not args.latency_only:
        print(
            f"{args.n} sagas, 4 steps, {args.io_ms:g} ms I/O per handler, "
            f"concurrency {args.concurrency} per process, best of {args.rounds} rounds\n"
        )
        print(f"{'workers':>7}  {'floor/s':>9}  {'statesaga/s':>11}  {'ratio':>6}")
        best: dict[int, float] = {}
        for w in args.workers:
            floor = ours = 0.0
            for r in range(args.rounds):
                sides = ("floor", "statesaga") if r % 2 == 0 else ("statesaga", "floor")
                for side in sides:
                    rate = measure(side, args.pg_url, w, args.concurrency, args.n, io)
                    if side == "floor":
                        floor = max(floor, rate)
                    else:
                        ours = max(ours, rate)
            best[w] = ours
            print(f"{w:>7}  {floor:>9.0f}  {ours:>11.0f}  {ours / floor:>6.2f}")
        if 1 in best and 2 in best:
            print(f"\n2 workers / 1 worker (statesaga): {best[2] / best[1]:.2f}x")
    lat = latency(args.pg_url, args.latency_samples)
    qs = statistics.quantiles(lat, n=100, method="inclusive")  # never beyond the max
    print(
        f"\nstart-to-first-step, idle worker, {len(lat)} sagas: "
        f"p50 {statistics.median(lat):.1f} ms, p99 {qs[98]:.1f} ms, max {max(lat):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
