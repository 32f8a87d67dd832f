"""Worker processes sharing one database: real processes, real signals.

Each worker is ``python -m tests.worker_child`` (``engine.worker(...).run()``),
started on 127.0.0.1's database and always stopped (SIGKILL at the latest) when
the test ends. Handlers log when they start and end, per process, to files the
test reads; that is how overlaps and re-runs are seen.

On PostgreSQL (``STATESAGA_TEST_URL``) four workers share 2,000 sagas; on
SQLite two share 300 (one host, one writer at a time).
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from statesaga import SagaEngine, SagaStatus
from statesaga.testing import check_saga
from tests._children import PATIENCE, ROOT, Children
from tests.conftest import backend
from tests.worker_child import EFFECTS_ENV, PAUSE_ENV, SLOW_ENV, Tracked, read_effects

LEASE = 1.5


class Workers(Children):
    """The worker processes of one test; all are killed when it ends."""

    def __init__(self, url: str, effects: Path) -> None:
        super().__init__()
        self.url = url
        self.effects = effects

    def spawn(self, *, concurrency: int = 8, slow: float = 2.0, grace: float = 30.0) -> int:
        """Start one worker; return its pid once it said READY."""
        env = dict(os.environ, **{PAUSE_ENV: "0.001", SLOW_ENV: str(slow)})
        args = ["tests.worker_child", self.url, str(self.effects)]
        args += ["--concurrency", str(concurrency), "--lease", str(LEASE), "--grace", str(grace)]
        ready = threading.Event()
        proc = self.start(args, env, ready)
        assert ready.wait(PATIENCE), f"worker never got ready: {self.output[proc.pid][-20:]}"
        return proc.pid

    def signal(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def wait(self, pid: int) -> int:
        proc = next(p for p in self.procs if p.pid == pid)
        return proc.wait(timeout=PATIENCE)


@pytest.fixture
def workers(db_url: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on the test's database, killed at the end."""
    crew = Workers(db_url, tmp_path)
    try:
        yield crew
    finally:
        crew.kill_all()


@pytest.fixture
def starter(new_engine: Callable[..., SagaEngine]) -> SagaEngine:
    """An engine that starts sagas and reads them; it runs no handler."""
    engine = new_engine()
    engine.register(Tracked())
    return engine


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def count(engine: SagaEngine, status: str) -> int:
    with engine.store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM statesaga_sagas WHERE status = :s"), {"s": status}
            ).scalar_one()
        )


def executions(
    folder: Path, killed: dict[int, float]
) -> dict[tuple[str, str], list[tuple[float, float, int]]]:
    """Each (saga, step)'s executions as (start, end, pid); one cut short by a kill
    ends at the kill."""
    open_: dict[tuple[int, str, str], float] = {}
    done: dict[tuple[str, str], list[tuple[float, float, int]]] = collections.defaultdict(list)
    for what, pid, saga, step, _attempt, at in read_effects(folder):
        if what == "START":
            open_[(pid, saga, step)] = at
        else:
            done[(saga, step)].append((open_.pop((pid, saga, step)), at, pid))
    for (pid, saga, step), start in open_.items():
        assert pid in killed, (
            f"{saga}.{step} started in {pid}, which was not killed, and never ended"
        )
        done[(saga, step)].append((start, killed[pid], pid))
    return done


def test_workers_share_the_sagas_and_take_over_a_killed_one(
    workers: Workers, starter: SagaEngine, tmp_path: Path
) -> None:
    """Four workers (two on SQLite) run 2,000 sagas (300). One is killed with
    SIGKILL in the middle of a slow step: once its lease (1.5 s) runs out, the
    others take its sagas over. Every saga completes, none is lost, the log of
    each is a legal path, and no two executions of one step of one saga overlap."""
    n, crew = (2000, 4) if backend() == "postgresql" else (300, 2)
    pids = [workers.spawn() for _ in range(crew)]
    for i in range(n):
        starter.start(Tracked, None, saga_id=f"s-{i:04}")
    # Slow sagas: their ``hold`` step takes 2 s, so a kill can land inside it.
    for i in range(crew * 4):
        starter.start(Tracked, None, saga_id=f"slow-{i}")

    def inside_hold() -> int | None:
        """A worker that is inside a slow step now (any: which one claims the slow
        sagas is up to the race for them)."""
        effects = list(read_effects(tmp_path))
        ended = {(p, s, st) for w, p, s, st, _, _ in effects if w == "END"}
        for w, p, s, st, _, _ in effects:
            if w == "START" and s.startswith("slow") and st == "hold" and (p, s, st) not in ended:
                return p
        return None

    found: list[int] = []

    def someone_inside_hold() -> bool:
        pid = inside_hold()
        found.extend([pid] if pid else [])
        return bool(found)

    wait_until(someone_inside_hold, "a worker to be inside a slow step")
    victim = found[0]
    assert victim in pids
    workers.signal(victim, signal.SIGKILL)
    killed_at = time.time()
    assert workers.wait(victim) == -signal.SIGKILL
    total = n + crew * 4
    # Meanwhile, `statesaga recover` runs again and again beside the busy workers.
    recovers = []
    cli = Path(sys.executable).with_name("statesaga")
    env = dict(os.environ, **{EFFECTS_ENV: str(tmp_path), PAUSE_ENV: "0.001"})
    while count(starter, "completed") < total:
        recovers.append(
            subprocess.run(
                [
                    str(cli),
                    "recover",
                    "--db",
                    workers.url,
                    "--definitions",
                    "tests.worker_child",
                    "--concurrency",
                    "2",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=PATIENCE,
            )
        )
        assert len(recovers) < 1000
    wait_until(lambda: count(starter, "completed") == total, f"{total} sagas to complete")
    assert recovers, "recover ran beside the workers"
    for done in recovers:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and "not resumed" not in done.stdout

    runs = executions(tmp_path, {victim: killed_at})
    for (saga, step), spans in runs.items():
        spans.sort()
        for (_, end, pid), (start, _, other) in itertools.pairwise(spans):
            assert start >= end, f"{saga}.{step} ran in {pid} and {other} at once"
    taken_over = [
        key
        for key, spans in runs.items()
        if len(spans) > 1 and spans[0][2] == victim and spans[-1][2] != victim
    ]
    assert taken_over, "some step the victim was running was run again by another worker"
    for saga, _ in taken_over:
        check_saga(Tracked.spec, SagaStatus.COMPLETED, starter.history(saga))
    assert sum(len(s) for s in runs.values()) >= 3 * total
    with starter.store.engine.connect() as conn:
        owners = conn.execute(
            sa.text("SELECT count(*) FROM statesaga_sagas WHERE owner IS NOT NULL")
        ).scalar_one()
    assert owners == 0, "a finished saga keeps no owner"


def freeze(workers: Workers, pid: int, engine: SagaEngine) -> None:
    """SIGSTOP ``pid``. On SQLite, at a moment it holds no write lock: a process
    frozen inside a transaction (its claim poll, a heartbeat) holds SQLite's one
    write lock until it wakes, and every other writer on the file waits for it;
    no lease can help there (the README says so). Frozen with the lock, it is
    woken and frozen again a little later."""
    for _ in range(100):
        workers.signal(pid, signal.SIGSTOP)
        if backend() == "postgresql" or _can_write(engine):
            return
        workers.signal(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} held the write lock at every one of 100 tries")


def _can_write(engine: SagaEngine) -> bool:
    """Whether a writer can take the SQLite file's write lock now (without waiting)."""
    path = engine.store.engine.url.database
    assert path is not None
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def test_a_stopped_worker_is_fenced_off_when_it_wakes(
    workers: Workers, starter: SagaEngine, tmp_path: Path
) -> None:
    """A worker is SIGSTOPped inside a step and stays stopped past its lease; the
    other worker takes the saga over and finishes it. Woken with SIGCONT, the first
    worker's handler ends, but its write is refused by the lease epoch: the saga's
    log does not change, and it never starts the saga's next step."""
    first = workers.spawn(slow=2.0)
    second = workers.spawn(slow=2.0)
    starter.start(Tracked, None, saga_id="slow-stop")

    def running_hold() -> int | None:
        for w, p, s, st, _, _ in read_effects(tmp_path):
            if w == "START" and s == "slow-stop" and st == "hold":
                return p
        return None

    wait_until(lambda: running_hold() is not None, "a worker to start the slow step")
    stopped = running_hold()
    assert stopped in (first, second)
    freeze(workers, stopped, starter)
    wait_until(lambda: starter.get("slow-stop").status is SagaStatus.COMPLETED, "takeover")
    log_before = starter.history("slow-stop")
    workers.signal(stopped, signal.SIGCONT)
    wait_until(
        lambda: any(
            w == "END" and p == stopped and st == "hold"
            for w, p, _, st, _, _ in read_effects(tmp_path)
        ),
        "the woken worker's handler to end",
    )
    workers.signal(stopped, signal.SIGTERM)  # graceful: whatever it would still do, it does
    assert workers.wait(stopped) == 0
    assert starter.history("slow-stop") == log_before
    after = [
        (st, p) for w, p, s, st, _, _ in read_effects(tmp_path) if w == "START" and s == "slow-stop"
    ]
    assert ("finish", stopped) not in after, after
    assert [st for st, p in after if p != stopped] == ["hold", "finish"]
    check_saga(Tracked.spec, SagaStatus.COMPLETED, log_before)


def test_sigterm_lets_the_running_step_finish_and_lets_go(
    workers: Workers, starter: SagaEngine, tmp_path: Path
) -> None:
    """SIGTERM in the middle of a slow step: the worker stops claiming, lets the
    step finish and records it, starts nothing new, lets go of the saga (no owner
    left, nothing failed) and exits 0; another worker finishes the saga at once."""
    pid = workers.spawn(slow=1.0)
    starter.start(Tracked, None, saga_id="slow-term")
    wait_until(
        lambda: any(w == "START" and st == "hold" for w, _, _, st, _, _ in read_effects(tmp_path)),
        "the slow step to start",
    )
    workers.signal(pid, signal.SIGTERM)
    assert workers.wait(pid) == 0
    assert "STOPPED" in workers.output[pid]
    row = starter.store.get("slow-term")
    assert row is not None
    assert (row.status, row.state, row.owner) == ("started", "finish", None)
    workers.spawn()
    wait_until(lambda: starter.get("slow-term").status is SagaStatus.COMPLETED, "the rest")
    check_saga(Tracked.spec, SagaStatus.COMPLETED, starter.history("slow-term"))
