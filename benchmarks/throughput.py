"""Saga throughput of statesaga against a raw-SQL floor, measured in the same run.

What it measures
----------------
``N`` happy-path order sagas (``definitions.order.OrderSaga``: 4 steps) are run
through ``statesaga.SagaEngine`` and, alternating with it in the same process,
through a *floor*: the plain DBAPI driver (``sqlite3`` / ``psycopg``) doing
exactly the commits and statements statesaga does, on the same tables and
indexes (created from ``statesaga/store/schema.py``) and with the same settings
(SQLite: WAL, the same ``synchronous``, ``busy_timeout``, ``BEGIN IMMEDIATE``):

- start:  insert the saga row + its first log entry (``executing``)      1 commit
- step k: update the saga row fenced on ``seq`` (rowcount checked) and
          insert the log rows (``completed`` + next ``executing``)       1 commit each

So a happy order saga costs 1 + 4 = 5 commits on both sides. The floor runs no
step handlers, no state machine and no JSON encoding of results (they are
constants): everything statesaga does beyond those statements counts as its
overhead, the handlers' own work (``FakeServices``) included. Commits are
*counted*, not assumed: an SQLAlchemy ``commit`` event listener on the store's
engine for statesaga (plus ``store.commits`` if the store has that counter, for
a store whose hot path commits on the DBAPI connection), a counter in the floor.

Every round opens fresh databases for both sides (a new SQLite file each; a new
PostgreSQL schema each, dropped afterwards), warms both up, then runs the N
sagas of each in interleaved chunks of 100, alternating which side goes first,
so that drift in disk or CPU speed (this is a shared 2-core machine) hits both
alike. The table reports the best round of each side and their ratio, which is
what the targets are checked against, plus the spread of the per-round ratios.

Modes and targets (statesaga / floor): ``sqlite-normal`` (``synchronous=NORMAL``,
the default) >= 0.5, ``sqlite-full`` (``synchronous=FULL``) >= 0.85,
``postgresql`` >= 0.75.

How to run
----------
    python benchmarks/throughput.py --n 2000
    python benchmarks/throughput.py --n 5000 --rounds 5 --modes sqlite-normal
    python benchmarks/throughput.py --skip-pg
    python benchmarks/throughput.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test

``synchronous=FULL`` and PostgreSQL wait for an fsync per commit, so they run
``--n-durable`` sagas (default: 3N / 4; long enough rounds to steady the fsync noise, and
the default run stays under two minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # ``definitions`` is not an installed package

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event  # noqa: E402

from definitions.order import OrderRequest, OrderSaga  # noqa: E402
from definitions.services import FakeServices  # noqa: E402
from statesaga import SagaEngine  # noqa: E402
from statesaga.store import SagaChanges  # noqa: E402
from statesaga.store.schema import metadata  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MODES = ("sqlite-normal", "sqlite-full", "postgresql")
TARGETS = {"sqlite-normal": 0.5, "sqlite-full": 0.85, "postgresql": 0.75}
EXPECTED_COMMITS = 5

# The statements statesaga's store issues (see statesaga/store/sql.py), written by hand.
SAGA_COLS = (
    "saga_id, name, version, fingerprint, status, state, attempt, seq, input, error, "
    "due_at, created_at, updated_at, owner, lease_until, lease_epoch, "
    "waiting_for, waiting_key, wait_until, request, request_by, request_reason"
)
UPDATE_COLS = (
    "status, state, attempt, seq, error, due_at, updated_at, owner, lease_until, "
    "waiting_for, waiting_key, wait_until"
)
LOG_COLS = "saga_id, seq, step, status, attempt, result, error, at"
SQL = {
    "insert_saga": f"INSERT INTO statesaga_sagas ({SAGA_COLS}) VALUES ({', '.join('?' * 22)})",
    "insert_log": f"INSERT INTO statesaga_log ({LOG_COLS}) VALUES ({', '.join('?' * 8)})",
    "update_saga": (
        "UPDATE statesaga_sagas SET status=?, state=?, attempt=?, seq=?, error=?, due_at=?, "
        "updated_at=?, owner=?, lease_until=?, waiting_for=?, waiting_key=?, wait_until=? "
        "WHERE statesaga_sagas.saga_id = ? AND statesaga_sagas.seq = ? "
        "AND statesaga_sagas.lease_epoch = ?"
    ),
}
STEPS = ("create_order", "charge_payment", "reserve_inventory", "confirm_order")
#: The runner a saga's row names as its owner while it runs (statesaga writes its own).
OWNER = "vm:12345:0123abcd"
RESULTS = ('"orders-0123456789"', '"payments-0123456789"', '"inventory-0123456789"', "null")


def check_floor() -> None:
    """Fail loudly if statesaga now writes columns the floor does not (a column added
    to the schema or to a transition's changes): the floor must do what it does."""
    table = metadata.tables["statesaga_sagas"]
    written = {
        "insert_saga": [c.strip() for c in SAGA_COLS.split(",")],
        "update_saga": [c.strip() for c in UPDATE_COLS.split(",")],
    }
    wanted = {
        "insert_saga": list(table.columns.keys()),
        "update_saga": list(SagaChanges.__annotations__),
    }
    for key, columns in written.items():
        if sorted(columns) != sorted(wanted[key]):
            raise SystemExit(
                f"the floor's {key} writes {columns}, statesaga {wanted[key]}: update it"
            )


# -- the floor ----------------------------------------------------------------


class Floor:
    """Plain DBAPI calls on one connection, counting commits."""

    def __init__(self, conn: Any, paramstyle_qmark: bool) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        self.sql = SQL if paramstyle_qmark else {k: v.replace("?", "%s") for k, v in SQL.items()}
        self.commits = 0

    def begin(self) -> None:
        raise NotImplementedError

    def execute(self, key: str, params: tuple[Any, ...]) -> int:
        cur = self.cur
        cur.execute(self.sql[key], params)
        return int(cur.rowcount)

    def executemany(self, key: str, params: list[tuple[Any, ...]]) -> None:
        self.cur.executemany(self.sql[key], params)

    def commit(self) -> None:
        self.conn.commit()
        self.commits += 1


class SqliteFloor(Floor):
    def begin(self) -> None:
        self.cur.execute("BEGIN IMMEDIATE")


class PgFloor(Floor):
    def begin(self) -> None:
        pass  # psycopg opens the transaction on the first statement, as under SQLAlchemy


def floor_saga(db: Floor, fingerprint: str, i: int) -> None:
    """One happy order saga done with plain DBAPI calls: 5 transactions."""
    sid = uuid.uuid4().hex
    now = time.time()
    order = {"customer_id": f"c-{i}", "total": 42.0, "sku": "sku-1", "quantity": 1}
    input_text = json.dumps(order, separators=(",", ":"))
    db.begin()
    db.execute(
        "insert_saga",
        (
            sid,
            "order",
            1,
            fingerprint,
            "started",
            STEPS[0],
            1,
            1,
            input_text,
            None,
            None,
            now,
            now,
            OWNER,
            now + 30.0,
            1,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    )
    db.execute("insert_log", (sid, 1, STEPS[0], "executing", 1, None, None, now))
    db.commit()
    seq = 1
    for k, step in enumerate(STEPS):
        now = time.time()
        entries = [(sid, seq + 1, step, "completed", 1, RESULTS[k], None, now)]
        owner: str | None = OWNER
        if k == len(STEPS) - 1:
            status, state, attempt, owner = "completed", "completed", 0, None
        else:
            status, state, attempt = "started", STEPS[k + 1], 1
            entries.append((sid, seq + 2, state, "executing", 1, None, None, now))
        db.begin()
        until = None if owner is None else now + 30.0
        rows = db.execute(
            "update_saga",
            (
                status,
                state,
                attempt,
                seq + len(entries),
                None,
                None,
                now,
                owner,
                until,
                None,
                None,
                None,
                sid,
                seq,
                1,
            ),
        )
        if rows != 1:
            raise RuntimeError(f"fenced update of {sid} matched {rows} rows")
        # statesaga executes one entry with execute() and several with executemany().
        if len(entries) == 1:
            db.execute("insert_log", entries[0])
        else:
            db.executemany("insert_log", entries)
        db.commit()
        seq += len(entries)


class FloorSide:
    """The floor on one fresh database: runs sagas on demand, times them, counts commits."""

    name = "floor"

    def __init__(self, db: Floor) -> None:
        self.db = db
        self.fingerprint = OrderSaga.spec.fingerprint

    def run(self, first: int, k: int) -> float:
        """Run sagas ``first`` .. ``first + k - 1``; return the seconds they took."""
        db, fp = self.db, self.fingerprint
        t0 = time.perf_counter()
        for i in range(first, first + k):
            floor_saga(db, fp, i)
        return time.perf_counter() - t0

    @property
    def commits(self) -> int:
        return self.db.commits

    def reset(self) -> None:
        self.db.commits = 0


def make_statesaga(url: str, sync: str) -> SagaEngine:
    """A ``SagaEngine`` on ``url`` with the order saga registered and its schema in place."""
    # The lease heartbeat (a commit every lease/3 = 10 s while sagas are held) is
    # not a saga's work; with an hour's lease it does not fire within a round, so
    # the commits counted per saga are the saga's own.
    engine = SagaEngine(
        url, sqlite_synchronous=sync, sleep=lambda _s: None, lease=7200.0, heartbeat=3600.0
    )
    engine.register(OrderSaga(FakeServices()))
    engine.store.ensure_schema()
    return engine


class SagaSide:
    """statesaga on one fresh database: runs order sagas, times them, counts commits.

    Commits are counted twice over: the store's hot path commits on its DBAPI
    connection and counts those in ``store.commits``; anything else commits
    through SQLAlchemy and is counted by a ``commit`` listener on its engine.
    """

    name = "statesaga"

    def __init__(self, url: str, sync: str) -> None:
        self.engine = make_statesaga(url, sync)
        self._sa_commits = 0
        self._own_base = 0
        event.listen(self.engine.store.engine, "commit", self._on_commit)

    def _on_commit(self, _conn: Any) -> None:
        self._sa_commits += 1

    def run(self, first: int, k: int) -> float:
        engine = self.engine
        t0 = time.perf_counter()
        for i in range(first, first + k):
            run = engine.run(OrderSaga, OrderRequest(f"c-{i}", 42.0))
            if not run.succeeded:
                raise RuntimeError(f"saga {run.saga_id} ended {run.status}")
        return time.perf_counter() - t0

    @property
    def commits(self) -> int:
        return self._sa_commits + self.engine.store.commits - self._own_base

    def reset(self) -> None:
        self._sa_commits = 0
        self._own_base = getattr(self.engine.store, "commits", 0)

    def close(self) -> None:
        event.remove(self.engine.store.engine, "commit", self._on_commit)
        close = getattr(self.engine, "close", None)  # SagaEngine.close() where it exists
        if close is not None:
            close()
        else:
            self.engine.store.engine.dispose()


# -- databases ------------------------------------------------------------------


def create_tables(url: str) -> None:
    """Create statesaga's tables and indexes (from schema.py) at ``url``."""
    eng = sa.create_engine(url)
    try:
        with eng.begin() as conn:
            metadata.create_all(conn)
    finally:
        eng.dispose()


@contextlib.contextmanager
def sqlite_file(tmp: Path) -> Iterator[Path]:
    """A fresh SQLite database path (with its WAL files removed afterwards)."""
    path = tmp / f"bench-{uuid.uuid4().hex[:8]}.db"
    try:
        yield path
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards; yields its name."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield schema
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def pg_schema_url(pg_url: str, schema: str) -> str:
    """``pg_url`` with its search path set to ``schema``."""
    sep = "&" if "?" in pg_url else "?"
    return f"{pg_url}{sep}options=-csearch_path%3D{schema}"


def pg_conninfo(pg_url: str) -> str:
    """The plain libpq URL of an SQLAlchemy ``postgresql+psycopg://`` URL."""
    url = sa.engine.make_url(pg_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def open_sides(mode: str, tmp: Path, pg_url: str) -> Iterator[tuple[FloorSide, SagaSide]]:
    """The floor and statesaga for ``mode``, each on a fresh database of its own."""
    with contextlib.ExitStack() as stack:
        if mode.startswith("sqlite"):
            sync = "NORMAL" if mode == "sqlite-normal" else "FULL"
            floor_path = stack.enter_context(sqlite_file(tmp))
            saga_url = f"sqlite:///{stack.enter_context(sqlite_file(tmp))}"
            create_tables(f"sqlite:///{floor_path}")
            conn: Any = sqlite3.connect(floor_path, isolation_level=None)
            stack.callback(conn.close)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA busy_timeout=30000")
            floor = FloorSide(SqliteFloor(conn, paramstyle_qmark=True))
        else:
            import psycopg

            sync = "NORMAL"  # ignored by PostgreSQL
            floor_schema = stack.enter_context(pg_schema(pg_url))
            saga_url = pg_schema_url(pg_url, stack.enter_context(pg_schema(pg_url)))
            create_tables(pg_schema_url(pg_url, floor_schema))
            conn = psycopg.connect(pg_conninfo(pg_url), options=f"-csearch_path={floor_schema}")
            stack.callback(conn.close)
            floor = FloorSide(PgFloor(conn, paramstyle_qmark=False))
        saga = SagaSide(saga_url, sync)
        stack.callback(saga.close)
        yield floor, saga


def measure(
    mode: str,
    n: int,
    rounds: int,
    tmp: Path,
    pg_url: str,
    chunk: int = 100,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure floor and statesaga on ``mode``; return the figures.

    Every round opens fresh databases for both, warms both up, then runs ``n``
    sagas on each in interleaved chunks of ``chunk`` sagas (alternating which
    goes first), so that drift in disk or CPU speed hits both alike.
    """
    warmup = max(10, min(100, n // 20))
    floor_rates: list[float] = []
    saga_rates: list[float] = []
    commits = {"floor": 0.0, "statesaga": 0.0}
    for r in range(rounds):
        with open_sides(mode, tmp, pg_url) as (floor, saga):
            sides: tuple[FloorSide | SagaSide, ...] = (floor, saga)
            for side in sides:
                side.run(0, warmup)
                side.reset()
            seconds = {"floor": 0.0, "statesaga": 0.0}
            done = 0
            while done < n:
                k = min(chunk, n - done)
                for side in sides if (done // chunk + r) % 2 == 0 else sides[::-1]:
                    seconds[side.name] += side.run(warmup + done, k)
                done += k
            for side in sides:
                commits[side.name] = side.commits / n
        floor_rates.append(n / seconds["floor"])
        saga_rates.append(n / seconds["statesaga"])
        log(
            f"  {mode} round {r + 1}/{rounds}: floor {floor_rates[-1]:8.0f}/s  "
            f"statesaga {saga_rates[-1]:8.0f}/s  ratio {saga_rates[-1] / floor_rates[-1]:.3f}"
        )
    ratios = [s / f for s, f in zip(saga_rates, floor_rates, strict=True)]
    return {
        "mode": mode,
        "n": n,
        "rounds": rounds,
        "floor": max(floor_rates),
        "statesaga": max(saga_rates),
        "ratio": max(saga_rates) / max(floor_rates),
        "ratio_min": min(ratios),
        "ratio_median": statistics.median(ratios),
        "ratio_max": max(ratios),
        "floor_commits": commits["floor"],
        "saga_commits": commits["statesaga"],
        "target": TARGETS[mode],
    }


def table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of the results."""
    lines = [
        "| mode | N | floor sagas/s | statesaga sagas/s | ratio (best/best) "
        "| per-round ratios min/med/max | target | commits/saga floor / statesaga |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in results:
        ok = "met" if r["ratio"] >= r["target"] else "MISSED"
        commits_ok = "" if r["saga_commits"] == EXPECTED_COMMITS else " (expected 5!)"
        lines.append(
            f"| {r['mode']} | {r['n']} | {r['floor']:.0f} | {r['statesaga']:.0f} "
            f"| {r['ratio']:.2f}x | {r['ratio_min']:.2f} / {r['ratio_median']:.2f} / "
            f"{r['ratio_max']:.2f} | >= {r['target']:.2f}x {ok} "
            f"| {r['floor_commits']:g} / {r['saga_commits']:g}{commits_ok} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="sagas per run (SQLite NORMAL)")
    p.add_argument(
        "--n-durable",
        type=int,
        default=None,
        help="sagas per run for the fsync-per-commit modes (sqlite-full, postgresql); "
        "default 3N / 4",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds per mode (fresh databases each)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help="SQLAlchemy URL of PostgreSQL")
    p.add_argument("--skip-pg", action="store_true", help="do not run the postgresql mode")
    p.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_floor()
    modes = [m for m in args.modes if not (args.skip_pg and m == "postgresql")]
    n_durable = args.n_durable or max(50, args.n * 3 // 4)
    tmp = Path(tempfile.mkdtemp(prefix="statesaga-bench-", dir=args.dir))
    print(
        f"python {sys.version.split()[0]}, sqlalchemy {sa.__version__}, "
        f"sqlite {sqlite3.sqlite_version}, files in {tmp}"
    )
    results = []
    try:
        for mode in modes:
            n = args.n if mode == "sqlite-normal" else n_durable
            results.append(measure(mode, n, args.rounds, tmp, args.pg_url))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
