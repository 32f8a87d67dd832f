"""Experimental fast paths for statesaga's write path, measured against the raw-SQL floor.

What it measures
----------------
Each *variant* below is applied to a ``SagaEngine`` by monkeypatching (nothing
in ``statesaga/`` is changed) and then measured exactly as
``benchmarks/throughput.py`` measures the library: the same order sagas, the
same floor, alternating rounds, fresh databases, commits counted. Variants
are cumulative, one idea each:

``library``
    statesaga as it is: ``engine.begin()`` per transition, Core statements.
``held-connection``
    the store keeps one SQLAlchemy ``Connection`` per thread and runs each
    transition as ``conn.begin()`` ... commit on it: no pool checkout/return.
``held-dbapi-stmts``
    + the INSERT/UPDATE statements are pre-compiled once and executed on the
    DBAPI cursor of that connection (named parameters, the same dicts);
    ``BEGIN``/``COMMIT`` still go through SQLAlchemy (its events still fire).
``held-dbapi-begin``
    + the SQLite ``begin`` listener issues ``BEGIN IMMEDIATE`` on the DBAPI
    connection instead of through ``exec_driver_sql``.
``raw-dbapi``
    the store holds a pooled DBAPI connection per thread
    (``engine.raw_connection()``) and does the whole hot-path transaction on
    it: ``BEGIN IMMEDIATE`` (SQLite), the pre-compiled statements on one reused
    cursor, ``commit()``; rollback (and dropping the connection if that fails)
    on any error. No SQLAlchemy on the write path; commits counted by the store.
``raw-dbapi-direct-fsm``
    + the engine fires transitions through a ``(state, trigger) -> dest``
    table derived from ``SagaMachine.transitions`` (the same choice, conditions
    and ``on_transition`` callback as the ``transitions`` trigger).
``raw-dbapi-direct-fsm-multirow``
    + two log rows are written by one multi-row ``INSERT ... VALUES (..), (..)``
    instead of ``executemany``.

How to run
----------
    python benchmarks/experiments.py                       # all variants, all modes
    python benchmarks/experiments.py --variants library raw-dbapi-direct-fsm --skip-pg
    python benchmarks/experiments.py --n 3000 --rounds 5 --modes sqlite-normal

The default run (N=1500, 2 rounds, 3 modes, 7 variants) takes about two minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import sqlalchemy as sa  # noqa: E402
import throughput  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

from statesaga import SagaEngine  # noqa: E402
from statesaga.errors import ConcurrentUpdate  # noqa: E402
from statesaga.machine import InvalidTransition, SagaMachine  # noqa: E402
from statesaga.store.schema import log  # noqa: E402
from statesaga.store.sql import SagaRow, SqlStore, Transaction  # noqa: E402

# -- stores ---------------------------------------------------------------------


def compile_hot_sql(store: SqlStore) -> dict[str, str]:
    """The store's three hot statements as DBAPI SQL with *named* parameters.

    SQLite is compiled with ``paramstyle="named"`` (``:name``); psycopg's
    dialect is already named (``%(name)s``). Both take the dicts the engine builds.
    """
    dialect = store.engine.dialect
    if dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        dialect = sqlite.dialect(paramstyle="named")
    return {
        "update": str(store._update.compile(dialect=dialect)),
        "insert_log": str(store._insert_log.compile(dialect=dialect)),
        "insert_saga": str(store._insert_saga.compile(dialect=dialect)),
    }


class HeldConnectionStore(SqlStore):
    """One SQLAlchemy ``Connection`` per thread, a ``conn.begin()`` per transition."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._local = threading.local()

    def _conn(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self.engine.connect()
        return conn

    def advance(
        self,
        saga_id: str,
        expected_seq: int,
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        conn = self._conn()
        with conn.begin():
            self._advance(conn, saga_id, expected_seq, changes, entries)

    def _advance(
        self,
        conn: Connection,
        saga_id: str,
        expected_seq: int,
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        Transaction(self, conn).advance(saga_id, expected_seq, changes, entries)

    def create(
        self, row: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> SagaRow | None:
        conn = self._conn()
        try:
            with conn.begin():
                self._create(conn, row, entries)
        except sa.exc.IntegrityError:
            existing = self.get(row["saga_id"])
            if existing is None:
                raise
            return existing
        return None

    def _create(
        self, conn: Connection, row: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> None:
        conn.execute(self._insert_saga, dict(row))
        if entries:
            conn.execute(self._insert_log, list(entries))


class HeldDbapiStatementsStore(HeldConnectionStore):
    """As ``HeldConnectionStore``, statements on the DBAPI cursor (pre-compiled SQL)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._sql = compile_hot_sql(self)

    def _advance(
        self,
        conn: Connection,
        saga_id: str,
        expected_seq: int,
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        params = dict(changes)
        params["b_id"] = saga_id
        params["b_seq"] = expected_seq
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cur.execute(self._sql["update"], params)
        if cur.rowcount != 1:
            raise ConcurrentUpdate(saga_id)
        if len(entries) == 1:
            cur.execute(self._sql["insert_log"], entries[0])
        elif entries:
            cur.executemany(self._sql["insert_log"], entries)

    def _create(
        self, conn: Connection, row: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> None:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(self._sql["insert_saga"], row)
            if len(entries) == 1:
                cur.execute(self._sql["insert_log"], entries[0])
            elif entries:
                cur.executemany(self._sql["insert_log"], entries)
        except self.engine.dialect.loaded_dbapi.IntegrityError as exc:
            raise sa.exc.IntegrityError("", None, exc) from exc


def dbapi_begin_listener(engine: Engine) -> None:
    """Replace make_engine's SQLite ``begin`` listener by one that skips ``exec_driver_sql``."""
    if engine.dialect.name != "sqlite":
        return
    for fn in list(engine.dispatch.begin):
        event.remove(engine, "begin", fn)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


class RawDbapiStore(SqlStore):
    """The proposed store: the hot path on a held, pooled DBAPI connection, no SQLAlchemy.

    ``create`` and ``advance`` (the only writes of a saga that has no
    transactional step) run on one DBAPI connection per thread, checked out of
    the engine's pool once and kept. ``transaction()`` (transactional steps),
    reads and DDL still use SQLAlchemy connections.
    """

    def __init__(self, engine: Engine, *, multirow: bool = False) -> None:
        super().__init__(engine)
        self._local = threading.local()
        self._sql = compile_hot_sql(self)
        self._begin = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else None
        self._integrity_error = engine.dialect.loaded_dbapi.IntegrityError
        self._multirow = multirow
        self._mark = "?" if engine.dialect.name == "sqlite" else "%s"
        self._multirow_sql: dict[int, str] = {}
        self._held: list[Any] = []
        self._held_lock = threading.Lock()
        event.listen(engine, "engine_disposed", self._release_held)
        self.commits = 0  # read by benchmarks/throughput.py

    def _cursor(self) -> Any:
        """The thread's held DBAPI connection's cursor (checked out on first use)."""
        local = self._local
        cur = getattr(local, "cur", None)
        if cur is None:
            local.fairy = self.engine.raw_connection()
            with self._held_lock:
                self._held.append(local.fairy)
            local.dbapi = local.fairy.driver_connection
            cur = local.cur = local.dbapi.cursor()
        return cur

    def _release_held(self, _engine: Engine) -> None:
        """On ``engine.dispose()``: close every thread's held connection."""
        with self._held_lock:
            held, self._held = self._held, []
        self._local = threading.local()
        for fairy in held:
            with contextlib.suppress(Exception):
                fairy.invalidate()  # closes the DBAPI connection

    def _drop(self) -> None:
        """Forget the thread's connection (after an error its state is unknown)."""
        local = self._local
        fairy = getattr(local, "fairy", None)
        local.fairy = local.dbapi = local.cur = None
        if fairy is not None:
            with self._held_lock:
                if fairy in self._held:
                    self._held.remove(fairy)
            with contextlib.suppress(Exception):  # already broken
                fairy.invalidate()

    def _fail(self) -> None:
        try:
            self._local.dbapi.rollback()
        except Exception:
            self._drop()

    def _insert_entries(self, cur: Any, entries: Sequence[Mapping[str, Any]]) -> None:
        if len(entries) == 1:
            cur.execute(self._sql["insert_log"], entries[0])
        elif self._multirow and entries:
            n = len(entries)
            sql = self._multirow_sql.get(n)
            if sql is None:
                row = "(" + ", ".join([self._mark] * 8) + ")"
                cols = ", ".join(c.name for c in log.columns)
                sql = self._multirow_sql[n] = (
                    f"INSERT INTO statesaga_log ({cols}) VALUES " + ", ".join([row] * n)
                )
            cur.execute(sql, [e[c.name] for e in entries for c in log.columns])
        elif entries:
            cur.executemany(self._sql["insert_log"], entries)

    def advance(
        self,
        saga_id: str,
        expected_seq: int,
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        params = dict(changes)
        params["b_id"] = saga_id
        params["b_seq"] = expected_seq
        cur = self._cursor()
        try:
            if self._begin is not None:
                cur.execute(self._begin)
            cur.execute(self._sql["update"], params)
            if cur.rowcount != 1:
                raise ConcurrentUpdate(saga_id)
            self._insert_entries(cur, entries)
            self._local.dbapi.commit()
        except BaseException:
            self._fail()
            raise
        self.commits += 1

    def create(
        self, row: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> SagaRow | None:
        cur = self._cursor()
        try:
            if self._begin is not None:
                cur.execute(self._begin)
            cur.execute(self._sql["insert_saga"], row)
            self._insert_entries(cur, entries)
            self._local.dbapi.commit()
        except self._integrity_error:
            self._fail()
            existing = self.get(row["saga_id"])
            if existing is None:
                raise
            return existing
        except BaseException:
            self._fail()
            raise
        self.commits += 1
        return None


# -- the state machine --------------------------------------------------------------


class _Transition:
    __slots__ = ("dest", "source")

    def __init__(self, source: str, dest: str) -> None:
        self.source = source
        self.dest = dest


class _Trigger:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _EventData:
    """What ``_Run.on_transition`` reads of transitions' ``EventData``."""

    __slots__ = ("event", "transition")

    def __init__(self, trigger: str, source: str, dest: str) -> None:
        self.event = _Trigger(trigger)
        self.transition = _Transition(source, dest)


class DirectMachine(SagaMachine):
    """A ``SagaMachine`` whose ``fire`` looks the transition up in a table.

    The table is derived from ``SagaMachine.transitions`` (the same list the
    ``transitions`` machine is built from); transitions are tried in their
    order and the ``compensation_failed`` condition is evaluated as the
    ``transitions`` machine does (``model.compensation_had_failed``).
    """

    @classmethod
    def of(cls, machine: SagaMachine) -> DirectMachine:
        direct = cls.__new__(cls)
        direct.__dict__.update(machine.__dict__)
        table: dict[tuple[str, str], list[tuple[str, bool]]] = {}
        for t in machine.transitions:
            conditional = t.condition == "compensation_failed"
            table.setdefault((t.source, t.trigger), []).append((t.dest, conditional))
        direct._table = {k: tuple(v) for k, v in table.items()}
        return direct

    def fire(self, model: Any, trigger: str) -> str:
        source = model.state
        for dest, conditional in self._table.get((source, trigger), ()):
            if conditional and not model.compensation_had_failed(None):
                continue
            model.on_transition(_EventData(trigger, source, dest))
            model.state = dest
            return dest
        raise InvalidTransition(f"{self.spec.key}: no {trigger!r} transition from {source}")


def direct_fsm(engine: SagaEngine) -> None:
    for defn in engine._definitions.values():
        defn.machine = DirectMachine.of(defn.machine)


# -- variants --------------------------------------------------------------------


def _with_store(make: Callable[[Engine], SqlStore]) -> Callable[[SagaEngine], None]:
    def patch(engine: SagaEngine) -> None:
        store = make(engine.store.engine)
        store.ensure_schema()
        engine.store = store

    return patch


def _held_dbapi_begin(engine: SagaEngine) -> None:
    dbapi_begin_listener(engine.store.engine)
    _with_store(HeldDbapiStatementsStore)(engine)


def _raw(engine: SagaEngine) -> None:
    _with_store(RawDbapiStore)(engine)


def _raw_direct(engine: SagaEngine) -> None:
    _raw(engine)
    direct_fsm(engine)


def _raw_direct_multirow(engine: SagaEngine) -> None:
    _with_store(lambda e: RawDbapiStore(e, multirow=True))(engine)
    direct_fsm(engine)


VARIANTS: dict[str, Callable[[SagaEngine], None] | None] = {
    "library": None,
    "held-connection": _with_store(HeldConnectionStore),
    "held-dbapi-stmts": _with_store(HeldDbapiStatementsStore),
    "held-dbapi-begin": _held_dbapi_begin,
    "raw-dbapi": _raw,
    "raw-dbapi-direct-fsm": _raw_direct,
    "raw-dbapi-direct-fsm-multirow": _raw_direct_multirow,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1500, help="sagas per run (SQLite NORMAL)")
    p.add_argument("--n-durable", type=int, default=None, help="sagas per run, FULL and PG")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=throughput.MODES, default=list(throughput.MODES))
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--pg-url", default=throughput.DEFAULT_PG_URL)
    p.add_argument("--skip-pg", action="store_true")
    args = p.parse_args(argv)
    modes = [m for m in args.modes if not (args.skip_pg and m == "postgresql")]
    n_durable = args.n_durable or max(50, args.n // 5)
    tmp = Path(tempfile.mkdtemp(prefix="statesaga-exp-"))
    rows = []
    try:
        for mode in modes:
            n = args.n if mode == "sqlite-normal" else n_durable
            for name in args.variants:
                r = throughput.measure(
                    mode, n, args.rounds, tmp, args.pg_url, VARIANTS[name], log=lambda _s: None
                )
                r["variant"] = name
                rows.append(r)
                print(
                    f"  {mode:13} {name:30} floor {r['floor']:7.0f}/s statesaga "
                    f"{r['statesaga']:7.0f}/s ratio {r['ratio']:.2f} "
                    f"(rounds {r['ratio_min']:.2f}-{r['ratio_max']:.2f}) "
                    f"commits/saga {r['saga_commits']:g}",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| mode | variant | floor sagas/s | statesaga sagas/s | ratio | rounds | target |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        ok = "met" if r["ratio"] >= r["target"] else "missed"
        print(
            f"| {r['mode']} | {r['variant']} | {r['floor']:.0f} | {r['statesaga']:.0f} "
            f"| {r['ratio']:.2f}x | {r['ratio_min']:.2f}-{r['ratio_max']:.2f} "
            f"| {r['target']:.2f}x {ok} |"
        )


if __name__ == "__main__":
    main()
