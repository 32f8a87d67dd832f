"""How long recovery takes to find 1,000 incomplete sagas among 10,000 / 100,000 finished ones.

What it measures
----------------
For each size, a fresh database is filled with bulk SQL (one transaction of
``executemany`` on SQLite, ``COPY`` on PostgreSQL; rows as ``schema.py``
defines them): ``--finished`` sagas of a trivial one-step saga that are
``completed`` (1 in 20 ``failed``) with their two log entries each, and
``--incomplete`` sagas exactly as ``SagaEngine.start()`` records them (status
``started``, the first step's state, attempt 0, seq 0, no log), their
``created_at`` spread among the finished ones. Then it times, separately:

1. discovery: ``engine.store.incomplete()`` (the query ``recover`` starts
   with), ``--repeat`` calls, median and max; the partial index
   ``statesaga_sagas_incomplete`` (on status, for ``started``/``compensating``)
   is meant to make it independent of the number of finished sagas;
2. the same query with the two statuses rendered as SQL literals (the
   proposed fix, see below), measured the same way;
3. a full ``engine.recover()`` over the incomplete sagas (reload, one commit
   to record the attempt, run the step, one commit), best of
   ``--recover-rounds``; the rows are reset with bulk SQL between rounds.

It prints the query plans (``EXPLAIN QUERY PLAN`` on SQLite; ``EXPLAIN`` on
PostgreSQL, with the plan a *prepared* statement gets once PostgreSQL switches
to a generic plan) to show whether the index is used. PostgreSQL tables are
``ANALYZE``d after loading, as autovacuum would; SQLite has no statistics.

Why (2): with bound parameters (``status IN (?, ?)``) SQLite cannot prove that
the query's WHERE implies the partial index's ``status IN ('started',
'compensating')``, so it scans the table; a generic PostgreSQL plan cannot
either. Rendering the constant statuses as literals lets both use the index.

How to run
----------
    python benchmarks/recover.py                      # SQLite, 10k and 100k finished
    python benchmarks/recover.py --pg                 # and PostgreSQL
    python benchmarks/recover.py --pg --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/recover.py --sizes 10000 100000 1000000 --repeat 10
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
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
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event  # noqa: E402

from statesaga import Saga, SagaEngine, StepContext, step  # noqa: E402
from statesaga.store.schema import INCOMPLETE, log, sagas  # noqa: E402
from statesaga.store.sql import SagaRow, SqlStore  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class Touch(Saga):
    """The trivial saga recovered: one step that does nothing."""

    name = "bench_touch"
    version = 1

    @step
    def touch(self, ctx: StepContext) -> None:
        return None


# -- the proposed discovery query ------------------------------------------------


def incomplete_literal(store: SqlStore, limit: int | None = None) -> list[SagaRow]:
    """``SqlStore.incomplete`` with the statuses rendered as SQL literals (the proposed fix)."""
    statuses = sa.bindparam("statuses", list(INCOMPLETE), expanding=True, literal_execute=True)
    q = sa.select(sagas).where(sagas.c.status.in_(statuses)).order_by(sagas.c.created_at)
    if limit is not None:
        q = q.limit(limit)
    with store.engine.connect() as conn:
        return [SagaRow(**r._mapping) for r in conn.execute(q)]


# -- loading ---------------------------------------------------------------------------


def rows(finished: int, incomplete: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Saga rows and log rows: ``finished`` done sagas, ``incomplete`` just-started ones."""
    fp = Touch.spec.fingerprint
    t0 = time.time() - finished  # one finished saga a second, up to now
    saga_rows: list[tuple[Any, ...]] = []
    log_rows: list[tuple[Any, ...]] = []
    for i in range(finished):
        sid = f"done-{i:08d}"
        at = t0 + i
        failed = i % 20 == 0
        status = "failed" if failed else "completed"
        error = "ServiceError: touch is unavailable" if failed else None
        saga_rows.append(
            (sid, Touch.name, 1, fp, status, status, 0, 2, "null", error, None, at, at)
        )
        log_rows.append((sid, 1, "touch", "executing", 1, None, None, at))
        log_rows.append((sid, 2, "touch", status, 1, None if failed else "null", error, at + 0.01))
    spacing = finished / max(incomplete, 1)
    for j in range(incomplete):
        at = t0 + (j + 0.5) * spacing
        sid = f"inc-{j:06d}"
        saga_rows.append(
            (sid, Touch.name, 1, fp, "started", "touch", 0, 0, "null", None, None, at, at)
        )
    return saga_rows, log_rows


def bulk_load(store: SqlStore, finished: int, incomplete: int) -> float:
    """Insert the rows in one transaction on the store's DBAPI connection; return seconds."""
    saga_rows, log_rows = rows(finished, incomplete)
    saga_cols = [c.name for c in sagas.columns]
    log_cols = [c.name for c in log.columns]
    t0 = time.perf_counter()
    raw = store.engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        cur = dbapi.cursor()
        if store.dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
            for table, cols, data in (("statesaga_sagas", saga_cols, saga_rows),
                                      ("statesaga_log", log_cols, log_rows)):  # fmt: skip
                marks = ", ".join("?" * len(cols))
                cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", data)
            dbapi.commit()
        else:
            for table, cols, data in (("statesaga_sagas", saga_cols, saga_rows),
                                      ("statesaga_log", log_cols, log_rows)):  # fmt: skip
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
            dbapi.commit()
            dbapi.autocommit = True
            cur.execute("ANALYZE statesaga_sagas")
            cur.execute("ANALYZE statesaga_log")
            dbapi.autocommit = False
        cur.close()
    finally:
        raw.close()
    return time.perf_counter() - t0


def reset_incomplete(store: SqlStore) -> None:
    """Put the recovered sagas back as ``start()`` left them (bulk SQL)."""
    with store.engine.begin() as conn:
        conn.execute(
            sagas.update()
            .where(sagas.c.saga_id.like("inc-%"))
            .values(status="started", state="touch", attempt=0, seq=0, error=None, due_at=None)
        )
        conn.execute(log.delete().where(log.c.saga_id.like("inc-%")))


# -- measuring ---------------------------------------------------------------------------


def time_calls(fn: Callable[[], list[SagaRow]], repeat: int, expected: int) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn``, checking it finds ``expected`` sagas."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = fn()
        times.append(time.perf_counter() - t0)
        if len(found) != expected:
            raise RuntimeError(f"found {len(found)} incomplete sagas, expected {expected}")
    return times


def time_driver(store: SqlStore, statement: str, params: Any, repeat: int) -> list[float]:
    """Seconds of ``repeat`` executions of ``statement`` + fetchall on the DBAPI cursor:
    the database's share of discovery, without SQLAlchemy rows and ``SagaRow``s."""
    raw = store.engine.raw_connection()
    try:
        cur: Any = raw.driver_connection.cursor()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            cur.execute(statement, params)
            cur.fetchall()
            times.append(time.perf_counter() - t0)
        raw.driver_connection.rollback()
        return times
    finally:
        raw.close()


def captured_select(store: SqlStore, fn: Callable[[], Any]) -> tuple[str, Any]:
    """The SELECT statement and parameters ``fn`` sends to the driver."""
    seen: list[tuple[str, Any]] = []

    def before(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        fn()
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    return seen[-1]


def query_plan(store: SqlStore, statement: str, params: Any) -> list[str]:
    """The plan of ``statement``: SQLite's EXPLAIN QUERY PLAN; PostgreSQL's EXPLAIN
    as sent (custom plan) and as a prepared statement's generic plan."""
    raw = store.engine.raw_connection()
    try:
        cur: Any = raw.driver_connection.cursor()
        if store.dialect == "sqlite":
            cur.execute("EXPLAIN QUERY PLAN " + statement, params)
            return [str(r[-1]) for r in cur.fetchall()]
        lines = ["-- as sent, with its parameters (custom plan):"]
        cur.execute("EXPLAIN " + statement, params)
        lines += [r[0] for r in cur.fetchall()]
        names = re.findall(r"%\((\w+)\)s", statement)
        if names:
            lines.append("-- prepared, generic plan (what a reused prepared statement may get):")
            numbered = statement
            for n, name in enumerate(dict.fromkeys(names), 1):
                numbered = numbered.replace(f"%({name})s", f"${n}")
            pname = f"bench_{uuid.uuid4().hex[:8]}"
            cur.execute(f"PREPARE {pname} AS {numbered}")
            cur.execute("SET plan_cache_mode = force_generic_plan")
            values = [str(params[k]).replace("'", "''") for k in dict.fromkeys(names)]
            literals = ", ".join(f"'{v}'" for v in values)  # a generic plan ignores them
            cur.execute(f"EXPLAIN EXECUTE {pname}({literals})")
            lines += [r[0] for r in cur.fetchall()]
            cur.execute("RESET plan_cache_mode")
            cur.execute(f"DEALLOCATE {pname}")
        raw.driver_connection.rollback()
        return lines
    finally:
        raw.close()


@contextlib.contextmanager
def database(backend: str, tmp: Path, pg_url: str) -> Iterator[str]:
    """A URL to a fresh, empty database (SQLite file or PostgreSQL schema)."""
    if backend == "sqlite":
        path = tmp / f"recover-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in pg_url else "?"
        yield f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.dispose()


def close(engine: SagaEngine) -> None:
    closer = getattr(engine, "close", None)
    if closer is not None:
        closer()
    else:
        engine.store.engine.dispose()


def measure(backend: str, finished: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Load, then time discovery (library and literal query) and a full recover()."""
    n_inc = args.incomplete
    with database(backend, tmp, args.pg_url) as url:
        engine = SagaEngine(url, sleep=lambda _s: None)
        try:
            engine.register(Touch)
            store = engine.store
            store.ensure_schema()
            load_s = bulk_load(store, finished, n_inc)
            lib = time_calls(store.incomplete, args.repeat, n_inc)
            lit = time_calls(lambda: incomplete_literal(store), args.repeat, n_inc)
            sql = {
                "library": captured_select(store, store.incomplete),
                "literal": captured_select(store, lambda: incomplete_literal(store)),
            }
            plans = {k: query_plan(store, *v) for k, v in sql.items()}
            db = {k: time_driver(store, *v, args.repeat) for k, v in sql.items()}
            recover_s = []
            for r in range(args.recover_rounds):
                if r:
                    reset_incomplete(store)
                t0 = time.perf_counter()
                report = engine.recover()
                recover_s.append(time.perf_counter() - t0)
                ok = [run for run in report.resumed if run.succeeded]
                if len(ok) != n_inc or report.skipped:
                    raise RuntimeError(
                        f"recover resumed {len(ok)} of {n_inc} (skipped {len(report.skipped)})"
                    )
                if store.incomplete():
                    raise RuntimeError("sagas still incomplete after recover()")
        finally:
            close(engine)
    return {
        "backend": backend,
        "finished": finished,
        "incomplete": n_inc,
        "load_s": load_s,
        "lib_med": statistics.median(lib),
        "lib_max": max(lib),
        "lit_med": statistics.median(lit),
        "lit_max": max(lit),
        "lib_db": statistics.median(db["library"]),
        "lit_db": statistics.median(db["literal"]),
        "recover": min(recover_s),
        "plans": plans,
    }


def index_used(plan: list[str]) -> str:
    text = "\n".join(plan)
    generic = text.split("-- prepared")[1] if "-- prepared" in text else ""
    custom = text.split("-- prepared")[0]
    uses = "statesaga_sagas_incomplete" in custom
    if generic:
        generic_uses = "statesaga_sagas_incomplete" in generic
        return f"{'yes' if uses else 'NO'}; generic plan: {'yes' if generic_uses else 'NO'}"
    return "yes" if uses else "NO (full scan)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                   help="numbers of finished sagas")  # fmt: skip
    p.add_argument("--incomplete", type=int, default=1000, help="incomplete sagas to find")
    p.add_argument("--repeat", type=int, default=20, help="timed incomplete() calls")
    p.add_argument("--recover-rounds", type=int, default=2, help="timed recover() runs")
    p.add_argument("--pg", action="store_true", help="also run on PostgreSQL")
    p.add_argument("--pg-url", default=DEFAULT_PG_URL)
    p.add_argument("--skip-sqlite", action="store_true")
    p.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    args = p.parse_args(argv)
    backends = ([] if args.skip_sqlite else ["sqlite"]) + (["postgresql"] if args.pg else [])
    tmp = Path(tempfile.mkdtemp(prefix="statesaga-recover-", dir=args.dir))
    results = []
    try:
        for backend in backends:
            for finished in args.sizes:
                r = measure(backend, finished, args, tmp)
                results.append(r)
                print(
                    f"  {backend} {finished:>9,} finished: loaded in {r['load_s']:.1f} s, "
                    f"incomplete() {r['lib_med'] * 1e3:.2f} ms, "
                    f"literal {r['lit_med'] * 1e3:.2f} ms, "
                    f"recover() {r['recover']:.2f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        for which, plan in r["plans"].items():
            print(f"\n{r['backend']}, {r['finished']:,} finished, {which} query plan:")
            for line in plan:
                print(f"    {line}")
    print()
    print(
        "| backend | finished | incomplete | `store.incomplete()` ms, median (max) "
        "| of which SQL+fetch ms | index used | literal-status query ms | of which SQL+fetch ms "
        "| index used | `recover()` of all, s | resumed/s |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---|---:|---:|")
    for r in results:
        print(
            f"| {r['backend']} | {r['finished']:,} | {r['incomplete']:,} "
            f"| {r['lib_med'] * 1e3:.2f} ({r['lib_max'] * 1e3:.2f}) | {r['lib_db'] * 1e3:.2f} "
            f"| {index_used(r['plans']['library'])} "
            f"| {r['lit_med'] * 1e3:.2f} ({r['lit_max'] * 1e3:.2f}) | {r['lit_db'] * 1e3:.2f} "
            f"| {index_used(r['plans']['literal'])} "
            f"| {r['recover']:.2f} | {r['incomplete'] / r['recover']:.0f} |"
        )


if __name__ == "__main__":
    main()
