"""Waiting sagas on PostgreSQL: memory per waiting saga and signal-to-resume
latency in one worker process, against a plain-psycopg floor in the same run.

What it measures
----------------
One worker process (``engine.worker(...).run()`` in a subprocess of this
script, started here and always stopped) has ``N`` sagas (10,000) waiting at
once, each at a wait step with no signal yet. ``--park`` of them (all, by
default) it drives there itself: each is claimed, reaches its wait, finds no
signal and is parked (a ``waiting`` entry, its lease let go). Any rest
(``--park`` below ``--n``) are stored parked exactly as it leaves them (the row
and its two log entries), which is quicker to set up.

The worker's memory is read before and after it parks its ``--park`` sagas,
after a warm-up that parks and resumes a few hundred (so caches, the pool's
threads and the connection pool exist before the first reading):

* RSS (``VmRSS`` from ``/proc/self/status``, after ``gc.collect()``): what the
  operating system charges the process, C allocations included (psycopg's
  buffers, SQLAlchemy's compiled caches, the allocator's arenas). It is the
  figure the target is about ("worker memory"); it cannot go down when the
  allocator keeps freed arenas, so it is an upper bound on what is retained.
* with ``--tracemalloc``: the Python objects still allocated after the park
  (``tracemalloc``, started in the worker before its engine is made), and
  where they were allocated. It shows *what* is kept per saga; it slows the
  worker several times, so the latency part is skipped in that mode.
* the worker's thread count before and after: waiting sagas hold no thread.

The latency part, with the worker idle and the ``N`` sagas waiting: the parent
signals one saga (``engine.signal``), and repeats once it has finished; the
latency is the wait handler's first instruction (``time.time()``, stamped by
the worker) minus the time just after ``signal`` returned. The floor, in the
same run on a fresh schema of statesaga's tables with ``N`` parked rows: the
same round trip in plain psycopg — insert a signal row, mark the saga due and
``NOTIFY`` in one transaction; a listener process wakes on the notification and
runs the ``UPDATE ... FOR UPDATE SKIP LOCKED`` a claim runs, commits, and
stamps the time. Rounds alternate the two sides.

Targets (issue #12): no thread and under 2 KiB of worker memory per waiting
saga; signal-to-resume p50 <= 20 ms with an idle worker.

How to run
----------
    python benchmarks/waits.py                  # 10,000 waiting, 300 signals per side
    python benchmarks/waits.py --n 2000 --park 2000 --signals 100
    python benchmarks/waits.py --tracemalloc    # what the worker keeps, by allocation site
"""

from __future__ import annotations

import argparse
import gc
import os
import select
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from benchmarks._postgres import drop_schema, fresh_schema, libpq  # noqa: E402
from statesaga import Saga, SagaEngine, Signal, StepContext, step, wait  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PATIENCE = 600.0  # a bound against hangs: every wait below gives up after it
CHANNEL = "bench_waits"


# -- the saga (imported by the worker process and by the parent alike) ------------


class BenchWait(Saga):
    """Wait for approval (no timeout: only a signal wakes it), then finish."""

    name = "bench-wait"

    @wait("approved")
    def approved(self, ctx: StepContext, signal: Signal) -> float:
        return time.time()  # the handler's start: the latency's end

    @step
    def finish(self, ctx: StepContext) -> None: ...


# -- databases --------------------------------------------------------------------


def preload(url: str, prefix: str, n: int, *, parked: bool) -> None:
    """``n`` sagas at their wait, as ``engine.start`` stores them, in one
    multi-row insert; ``parked``: as a worker leaves them once it found no
    signal (attempt 1 logged ``executing`` then ``waiting``, let go)."""
    spec = BenchWait.spec
    now = time.time()
    rows = [
        (
            f"{prefix}{i:06}",
            spec.name,
            spec.version,
            spec.fingerprint,
            "approved",
            1 if parked else 0,
            2 if parked else 0,
            now + i * 1e-6,
            now,
            "approved" if parked else None,
        )
        for i in range(n)
    ]
    log = [
        (f"{prefix}{i:06}", seq, status, now)
        for i in range(n if parked else 0)
        for seq, status in ((1, "executing"), (2, "waiting"))
    ]
    with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO statesaga_sagas (saga_id, name, version, fingerprint, status, state, "
            "attempt, seq, input, created_at, updated_at, lease_epoch, waiting_for) "
            "VALUES (%s, %s, %s, %s, 'started', %s, %s, %s, 'null', %s, %s, 0, %s)",
            rows,
        )
        cur.executemany(
            "INSERT INTO statesaga_log (saga_id, seq, step, status, attempt, at) "
            "VALUES (%s, %s, 'approved', %s, 1, %s)",
            log,
        )
        conn.execute("NOTIFY statesaga_runnable")


def count_parked(url: str, prefix: str) -> int:
    """Sagas named ``prefix...`` parked at their wait (logged ``waiting``, let go)."""
    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM statesaga_sagas WHERE saga_id LIKE %s AND status = 'started' "
            "AND waiting_for IS NOT NULL AND owner IS NULL AND seq > 0",
            (prefix + "%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def until(done: Any, what: str, patience: float = PATIENCE) -> None:
    deadline = time.monotonic() + patience
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


# -- child processes ------------------------------------------------------------------


class Child:
    """A process of this script, spoken to line by line; always stopped."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.read() == "READY"

    def read(self, timeout: float = PATIENCE) -> str:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            raise TimeoutError(f"child {self.proc.pid} said nothing in {timeout} s")
        line = out.readline()
        if not line:
            raise RuntimeError(f"child {self.proc.pid} exited ({self.proc.wait()})")
        return line.strip()

    def ask(self, line: str) -> str:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=30)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def memory() -> tuple[int, int]:
    """This process's RSS in bytes and its thread count, from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


def worker_main(url: str, concurrency: int, traced: bool) -> None:
    """The worker process: a statesaga worker, and a reply to each line on stdin."""
    if traced:
        tracemalloc.start(8)
    engine = SagaEngine(url)
    engine.register(BenchWait())
    worker = engine.worker(concurrency=concurrency, poll=1.0)
    worker.start()
    snapshot: Any = None
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        gc.collect()
        rss, threads = memory()
        traced_bytes = 0
        if traced:
            traced_bytes = tracemalloc.get_traced_memory()[0]
            if command == "base":
                snapshot = tracemalloc.take_snapshot()
            elif snapshot is not None:
                top = tracemalloc.take_snapshot().compare_to(snapshot, "traceback")[:6]
                for stat in top:
                    where = " <- ".join(
                        f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback[:4]
                    )
                    print(
                        f"  +{stat.size_diff:>10} B {stat.count_diff:>7} blocks  {where}",
                        file=sys.stderr,
                    )
        print(f"{rss} {threads} {traced_bytes}", flush=True)
    worker.stop(grace=5)
    engine.close()
    print("STOPPED", flush=True)


def listener_main(url: str) -> None:
    """The floor's listener: on each notification, the claim's UPDATE, then the time."""
    info = libpq(url)
    listen = psycopg.connect(info, autocommit=True)
    listen.execute(f"LISTEN {CHANNEL}")
    claim = psycopg.connect(info)
    print("READY", flush=True)
    stop = threading.Event()

    def quit_on_stdin() -> None:
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=quit_on_stdin, daemon=True).start()
    gen = listen.notifies(timeout=0.5)
    while not stop.is_set():
        for _note in gen:
            now = time.time()
            # A long lease: a saga claimed here stays taken (the floor drives it no further).
            rows = claim.execute(
                CLAIM, {"owner": "floor", "until": now + 3600, "now": now}
            ).fetchall()
            claim.commit()
            stamp = time.time()
            print(f"{stamp:.6f} {len(rows)}", flush=True)
            if stop.is_set():
                break
        gen = listen.notifies(timeout=0.5)
    print("STOPPED", flush=True)


#: The claim a worker runs (``store._claims.claim``), for one saga, in plain SQL.
CLAIM = (
    "UPDATE statesaga_sagas SET owner = %(owner)s, lease_until = %(until)s, "
    "lease_epoch = lease_epoch + 1 WHERE saga_id IN (SELECT saga_id FROM statesaga_sagas "
    "WHERE status IN ('started', 'compensating') AND (owner IS NULL OR lease_until < %(now)s) "
    "AND (waiting_for IS NULL OR due_at <= %(now)s) AND (due_at IS NULL OR due_at <= %(now)s) "
    "ORDER BY created_at LIMIT 8 FOR UPDATE SKIP LOCKED) RETURNING *"
)
#: What ``signal`` writes (``store._signals.send``), in plain SQL.
SEND = (
    "INSERT INTO statesaga_signals (event_id, event, saga_id, payload, received_at) "
    "VALUES (%(eid)s, 'approved', %(saga)s, 'null', %(now)s)",
    "UPDATE statesaga_sagas SET due_at = %(now)s WHERE saga_id = %(saga)s "
    "AND waiting_for = 'approved' RETURNING saga_id",
)


# -- the two sides of the latency part --------------------------------------------------


def statesaga_latency(url: str, engine: Any, ids: list[str]) -> list[float]:
    """Signal each saga in turn; (handler start - signal returned) in ms."""
    out = []
    for saga_id in ids:
        time.sleep(0.02)  # the worker is idle again
        engine.signal(saga_id, "approved", None, event_id=f"e-{saga_id}")
        sent = time.time()
        deadline = time.monotonic() + 60
        # Look rarely: on two cores, a tight poll would slow the worker it measures.
        while not (run := engine.get(saga_id)).status.is_terminal:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{saga_id} did not resume")
            time.sleep(0.025)
        out.append((run.results["approved"] - sent) * 1000)
    return out


def floor_latency(url: str, listener: Child, ids: list[str]) -> list[float]:
    """The same round trip in plain psycopg: send, and the listener's claim."""
    out = []
    with psycopg.connect(libpq(url)) as conn:
        for saga_id in ids:
            time.sleep(0.02)
            now = time.time()
            params = {"eid": f"e-{saga_id}", "saga": saga_id, "now": now}
            conn.execute(SEND[0], params)
            conn.execute(SEND[1], params).fetchall()
            conn.execute(f"NOTIFY {CHANNEL}")
            conn.commit()
            sent = time.time()
            stamp, claimed = listener.read(60).split()
            assert claimed == "1", f"the floor's claim took {claimed} sagas"
            out.append((float(stamp) - sent) * 1000)
    return out


def pct(xs: list[float]) -> str:
    qs = statistics.quantiles(xs, n=100, method="inclusive")  # never beyond the max
    return f"p50 {statistics.median(xs):5.1f} ms  p99 {qs[98]:5.1f} ms  max {max(xs):5.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=DEFAULT_PG_URL)
    p.add_argument("--n", type=int, default=10_000, help="sagas waiting at once")
    p.add_argument("--park", type=int, default=None, help="of them, parked by the worker (all)")
    p.add_argument("--warmup", type=int, default=500, help="sagas parked before the baseline")
    p.add_argument("--signals", type=int, default=300, help="signals per side, one at a time")
    p.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--tracemalloc", action="store_true", help="trace allocations; no latency")
    p.add_argument("--child", choices=["worker", "listener"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "worker":
        worker_main(args.url, args.concurrency, args.tracemalloc)
        return 0
    if args.child == "listener":
        listener_main(args.url)
        return 0
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, PostgreSQL at {args.pg_url}")
    print(f"{args.n} sagas waiting in one worker process (concurrency {args.concurrency})\n")
    schemas: list[str] = []
    children: list[Child] = []
    try:
        name, url = fresh_schema(args.pg_url)
        schemas.append(name)
        wargs = ["--child", "worker", "--url", url, "--concurrency", str(args.concurrency)]
        worker = Child(*wargs, *(["--tracemalloc"] if args.tracemalloc else []))
        children.append(worker)
        engine = SagaEngine(url)
        engine.register(BenchWait())
        # Warm-up: park some, resume some, so the baseline has what a running worker has.
        preload(url, "warm-", args.warmup, parked=False)
        until(lambda: count_parked(url, "warm-") == args.warmup, "the warm-up to park")
        statesaga_latency(url, engine, [f"warm-{i:06}" for i in range(min(50, args.warmup))])
        rss0, threads0, traced0 = map(int, worker.ask("base").split())
        park = args.n if args.park is None else min(args.park, args.n)
        began = time.perf_counter()
        preload(url, "w-", park, parked=False)
        until(lambda: count_parked(url, "w-") == park, f"{park} sagas to park")
        parking = time.perf_counter() - began
        time.sleep(1.0)  # idle again
        rss1, threads1, traced1 = map(int, worker.ask("after").split())
        print(f"the worker parked {park}: {parking:.1f} s ({park / parking:.0f} sagas/s)")
        print(
            f"worker RSS: {rss0 / 2**20:.1f} MiB -> {rss1 / 2**20:.1f} MiB: "
            f"{(rss1 - rss0) / park:.0f} B per waiting saga (target < 2048)"
        )
        print(f"worker threads: {threads0} -> {threads1} (target: no thread per saga)")
        if args.tracemalloc:
            print(
                f"traced Python memory: {(traced1 - traced0) / park:.0f} B per waiting saga "
                "(allocation sites on stderr)"
            )
            return 0
        preload(url, "p-", args.n - park, parked=True)
        until(lambda: count_parked(url, "") >= args.n, "all to wait")
        rss2, threads2, _ = map(int, worker.ask("after").split())
        print(
            f"{args.n} waiting: worker RSS {rss2 / 2**20:.1f} MiB, {threads2} threads "
            f"({args.n - park} more stored parked; the worker holds nothing of them)"
        )

        fname, furl = fresh_schema(args.pg_url)
        schemas.append(fname)
        preload(furl, "w-", args.n, parked=True)
        listener = Child("--child", "listener", "--url", furl)
        children.append(listener)
        ours: list[float] = []
        floor: list[float] = []
        per = args.signals // args.rounds
        for r in range(args.rounds):
            ids = [f"w-{i:06}" for i in range(r * per, (r + 1) * per)]  # parked by the worker
            sides = ("floor", "statesaga") if r % 2 == 0 else ("statesaga", "floor")
            for side in sides:
                if side == "floor":
                    floor += floor_latency(furl, listener, ids)
                else:
                    ours += statesaga_latency(url, engine, ids)
        engine.close()
        print(f"\nsignal-to-resume, idle worker, {args.n} waiting, one signal at a time:")
        print(
            f"  floor (psycopg: INSERT + NOTIFY; LISTEN + claim UPDATE), {len(floor)}: {pct(floor)}"
        )
        print(f"  statesaga (signal() returned -> handler starts),      {len(ours)}: {pct(ours)}")
        print(
            f"  ratio of medians statesaga / floor: "
            f"{statistics.median(ours) / statistics.median(floor):.1f}x (target p50 <= 20 ms)"
        )
        return 0
    finally:
        for child in children:
            child.stop()
        for name in schemas:
            drop_schema(args.pg_url, name)


if __name__ == "__main__":
    sys.exit(main())
