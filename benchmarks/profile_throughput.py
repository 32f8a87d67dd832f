"""Where a happy order saga's time goes in statesaga, on SQLite (``synchronous=NORMAL``).

What it measures
----------------
It runs N order sagas (as ``benchmarks/throughput.py`` does) with timers wrapped
around the layers a saga passes through, and reports each layer's *own* time
(its time minus that of the timed layers it calls) in microseconds per saga:

- the engine door (``SagaEngine.run``/``_create``), the new saga's input
  check (``_inputs.checked``) and creation (``Claims.create``, ``LiveRun``),
- the runner (``Runner.drive``/``_begin``/``_attempt*``/``_fire``), the journal
  (what a transition writes), the machine's dispatch (``next_state``), leases,
- the store's hot path (``SqlStore.create``/``advance``/``_direct``) and its
  writers (``Writers.take``/``give``),
- step handlers (``FakeServices.call``), handler calls and ``StepContext``
  construction (``Handlers.call``/``context``), ``codec`` (cattrs/json), ``uuid4``,
  the returned ``SagaRun``,
- SQLAlchemy's ``Connection.execute``/``exec_driver_sql`` (nothing on the hot
  path should use it),
- the sqlite3 C calls themselves: ``BEGIN IMMEDIATE``, the INSERT/UPDATE
  statements, ``COMMIT``.

The floor of ``throughput.py`` gets the same sqlite3 timers, so the two can be
compared line by line. The timers cost ~0.3 us each; the uninstrumented time
per saga is printed too. ``--cprofile`` adds a cProfile listing (slower, but by
function).

How to run
----------
    python benchmarks/profile_throughput.py --n 3000
    python benchmarks/profile_throughput.py --n 3000 --cprofile
    python benchmarks/profile_throughput.py --n 500 --mode sqlite-full
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import shutil
import sqlite3
import sqlite3.dbapi2
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import sqlalchemy.engine.base as sa_base  # noqa: E402
import throughput  # noqa: E402

from definitions.order import OrderRequest, OrderSaga  # noqa: E402
from definitions.services import FakeServices  # noqa: E402
from statesaga import _claiming, _handlers, _inputs, _journal, _leases, _live, _runner  # noqa: E402
from statesaga import _codec as codec  # noqa: E402
from statesaga import _engine as engine_mod  # noqa: E402
from statesaga import _machine as machine_mod  # noqa: E402
from statesaga.store import _writers  # noqa: E402
from statesaga.store import sql as sql_mod  # noqa: E402


class Tracer:
    """Exclusive time per label: a timed call's time minus that of timed calls inside it."""

    def __init__(self) -> None:
        self.own: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[float] = []
        self.enabled = False

    def reset(self) -> None:
        self.own.clear()
        self.calls.clear()

    @contextlib.contextmanager
    def span(self, label: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        stack = self._stack
        stack.append(0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            inner = stack.pop()
            self.own[label] += dt - inner
            self.calls[label] += 1
            if stack:
                stack[-1] += dt

    def wrap(self, label: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        tracer = self

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not tracer.enabled:
                return fn(*args, **kwargs)
            name = label(*args) if callable(label) else label
            stack = tracer._stack
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                inner = stack.pop()
                tracer.own[name] += dt - inner
                tracer.calls[name] += 1
                if stack:
                    stack[-1] += dt

        return timed


TRACER = Tracer()

ENGINE = "engine door (SagaEngine.run/_create)"
INPUTS = "input check (_inputs.checked: id, JSON, round trip)"
CREATE = "creation (Claims.create, Journal.created, LiveRun)"
RUNNER = "runner (drive, _begin, _attempt*, _fire)"
JOURNAL = "journal (what a transition writes)"
FSM = "machine dispatch (next_state, state, is_terminal)"
LEASES = "leases (hold, valid, until, drop)"
STORE = "store hot path (create, advance, _direct)"
WRITERS = "writers (take, give)"
HANDLER = "step handlers (FakeServices.call)"
CALL = "handler call + StepContext (Handlers.call/context)"
CODEC = "codec (dumps, stored, frozen: cattrs + json)"
UUID = "uuid4"
SNAPSHOT = "the returned SagaRun (snapshot)"
SA_EXEC = "SQLAlchemy Connection.execute/exec_driver_sql overhead"
DB_BEGIN = "sqlite3 BEGIN IMMEDIATE (C)"
DB_EXEC = "sqlite3 INSERT/UPDATE execute(many) (C)"
DB_COMMIT = "sqlite3 COMMIT (C)"
FLOOR_PY = "floor Python code (uuid, json, tuples, loop)"
ORDER = [
    ENGINE,
    INPUTS,
    CREATE,
    RUNNER,
    JOURNAL,
    FSM,
    LEASES,
    STORE,
    WRITERS,
    HANDLER,
    CALL,
    CODEC,
    UUID,
    SNAPSHOT,
    SA_EXEC,
    DB_BEGIN,
    DB_EXEC,
    DB_COMMIT,
    FLOOR_PY,
]


def _statement_label(_self: Any, sql: str, *_args: Any) -> str:
    return DB_BEGIN if sql.startswith("BEGIN") else DB_EXEC


class TimedCursor(sqlite3.Cursor):
    execute = TRACER.wrap(_statement_label, sqlite3.Cursor.execute)
    executemany = TRACER.wrap(_statement_label, sqlite3.Cursor.executemany)


class TimedConnection(sqlite3.Connection):
    def cursor(self, factory: Any = TimedCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    execute = TRACER.wrap(_statement_label, sqlite3.Connection.execute)
    commit = TRACER.wrap(DB_COMMIT, sqlite3.Connection.commit)


def _wrap_all(cls: Any, names: tuple[str, ...], label: str) -> None:
    for name in names:
        setattr(cls, name, TRACER.wrap(label, getattr(cls, name)))


def install() -> None:
    """Wrap the layers in timers (process-wide; for this script only)."""
    connect = functools.partial(sqlite3.connect, factory=TimedConnection)
    sqlite3.connect = connect  # the floor
    sqlite3.dbapi2.connect = connect  # SQLAlchemy's pysqlite dialect

    for name in ("execute", "exec_driver_sql"):
        setattr(sa_base.Connection, name, TRACER.wrap(SA_EXEC, getattr(sa_base.Connection, name)))
    _wrap_all(engine_mod.SagaEngine, ("run", "_run", "_create"), ENGINE)
    _inputs.checked = TRACER.wrap(INPUTS, _inputs.checked)
    _wrap_all(_claiming.Claims, ("create",), CREATE)
    _wrap_all(_live.LiveRun, ("__init__",), CREATE)
    _wrap_all(_journal.Journal, ("created",), CREATE)
    runner = ("drive", "_begin", "_attempt", "_attempt_step", "_stored", "_fire", "_probe")
    _wrap_all(_runner.Runner, runner, RUNNER)
    _wrap_all(_journal.Journal, ("transition", "begin"), JOURNAL)
    _wrap_all(machine_mod.SagaMachine, ("next_state", "state", "is_terminal"), FSM)
    _wrap_all(_leases.Leases, ("hold", "valid", "until", "drop"), LEASES)
    _wrap_all(sql_mod.SqlStore, ("create", "_create", "advance", "_direct"), STORE)
    _wrap_all(_writers.Writers, ("take", "give"), WRITERS)
    _wrap_all(_handlers.Handlers, ("call", "context"), CALL)
    _wrap_all(_live.LiveRun, ("snapshot",), SNAPSHOT)
    FakeServices.call = TRACER.wrap(HANDLER, FakeServices.call)  # type: ignore[method-assign]
    for name in ("dumps", "stored", "frozen", "loads", "round_trip_problem"):
        setattr(codec, name, TRACER.wrap(CODEC, getattr(codec, name)))
    uuid.uuid4 = TRACER.wrap(UUID, uuid.uuid4)
    throughput.floor_saga = TRACER.wrap(FLOOR_PY, throughput.floor_saga)


def breakdown(mode: str, n: int, tmp: Path) -> tuple[dict[str, float], ...]:
    """Instrumented own time per layer (us/saga) of statesaga and of the floor, and totals."""
    out: dict[str, tuple[dict[str, float], float]] = {}
    with throughput.open_sides(mode, tmp, "") as sides:
        for side in sides:
            side.run(0, 50)
            TRACER.reset()
            TRACER.enabled = True
            seconds = side.run(50, n)
            TRACER.enabled = False
            out[side.name] = ({k: v / n * 1e6 for k, v in TRACER.own.items()}, seconds / n * 1e6)
    (saga, saga_total), (floor, floor_total) = out["statesaga"], out["floor"]
    return saga, floor, {"statesaga": saga_total, "floor": floor_total}


def plain_totals(mode: str, n: int, tmp: Path) -> tuple[float, float]:
    """Uninstrumented us/saga of statesaga and of the floor (best of 3 rounds)."""
    r = throughput.measure(mode, n, 3, tmp, "", log=lambda _s: None)
    return 1e6 / r["statesaga"], 1e6 / r["floor"]


def cprofile_listing(mode: str, n: int, tmp: Path) -> str:
    """cProfile of ``n`` statesaga sagas, top functions by own time."""
    prof = cProfile.Profile()
    with throughput.sqlite_file(tmp) as path:
        sync = "NORMAL" if mode == "sqlite-normal" else "FULL"
        eng = throughput.make_statesaga(f"sqlite:///{path}", sync)
        for i in range(50):
            eng.run(OrderSaga, OrderRequest(f"w-{i}", 42.0))
        prof.enable()
        for i in range(n):
            eng.run(OrderSaga, OrderRequest(f"c-{i}", 42.0))
        prof.disable()
        eng.store.engine.dispose()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--mode", choices=("sqlite-normal", "sqlite-full"), default="sqlite-normal")
    p.add_argument("--cprofile", action="store_true", help="also print a cProfile listing")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="statesaga-prof-"))
    try:
        plain_saga, plain_floor = plain_totals(args.mode, args.n, tmp)
        listing = cprofile_listing(args.mode, args.n, tmp) if args.cprofile else ""
        install()
        saga, floor, totals = breakdown(args.mode, args.n, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    saga_total, floor_total = totals["statesaga"], totals["floor"]
    print(f"{args.mode}, {args.n} happy order sagas, statesaga as it is")
    print(
        f"uninstrumented (best of 3): statesaga {plain_saga:.0f} us/saga, "
        f"floor {plain_floor:.0f} us/saga, ratio {plain_floor / plain_saga:.2f}"
    )
    print()
    print("| layer (own time) | statesaga us/saga | % | floor us/saga |")
    print("|---|---:|---:|---:|")
    labels = [k for k in ORDER if k in saga or k in floor]
    labels += sorted((set(saga) | set(floor)) - set(ORDER))
    for k in labels:
        s, f = saga.get(k, 0.0), floor.get(k, 0.0)
        print(f"| {k} | {s:.1f} | {100 * s / saga_total:.0f}% | {f:.1f} |")
    rest_s = saga_total - sum(saga.values())
    rest_f = floor_total - sum(floor.values())
    print(
        f"| untimed (benchmark loop, OrderRequest) | {rest_s:.1f} "
        f"| {100 * rest_s / saga_total:.0f}% | {rest_f:.1f} |"
    )
    print(f"| **total (instrumented)** | **{saga_total:.0f}** | 100% | **{floor_total:.0f}** |")
    if listing:
        print()
        print(listing)


if __name__ == "__main__":
    main()
