"""The SQL store: every read and write statesaga makes, on SQLAlchemy Core.

Each saga transition is one transaction that appends log entries and updates
the saga row, fenced on the row's ``seq`` so a runner that lost the race
writes nothing. SQLite is opened in WAL mode with ``BEGIN IMMEDIATE`` writers
and a busy timeout; PostgreSQL is used as it is.

The hot path (``create`` and ``advance``: every transition of a saga without
transactional steps) skips SQLAlchemy's per-statement machinery, which costs
several times the commit itself on SQLite: each thread keeps one pooled DBAPI
connection and runs the statements, compiled once from the same Core
constructs, on its cursor. Driver errors are re-raised wrapped as SQLAlchemy
would wrap them. Everything else (transactional steps, reads, DDL) uses
SQLAlchemy connections as usual.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import ConcurrentUpdate, SchemaVersionError
from statesaga.store._rows import LogRecord, LogRow, NewSaga, SagaChanges, SagaRow
from statesaga.store.schema import INCOMPLETE, SCHEMA_VERSION, log, metadata, sagas, schema_version

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

#: Execution option marking a connection that only reads (SQLite: plain BEGIN).
READ_ONLY = "statesaga_read_only"


def make_engine(
    url: str, *, sqlite_synchronous: str = "NORMAL", busy_timeout: float = 30.0
) -> Engine:
    """Create an SQLAlchemy engine for ``url``, tuned for statesaga.

    For SQLite: WAL journal, the given ``synchronous`` level, a busy timeout and
    ``BEGIN IMMEDIATE`` for every transaction (writers queue instead of
    deadlocking on a lock upgrade). Other databases are opened as they are.
    """
    sync = sqlite_synchronous.upper()
    if sync not in SQLITE_SYNCHRONOUS:
        raise ValueError(
            f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
            f"got {sqlite_synchronous!r}"
        )
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        memory = engine.url.database in (None, "", ":memory:")

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE itself.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # Writers take the write lock up front; readers must not queue behind them.
            read = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


class Transaction:
    """One open transaction: the saga transition it records, and for
    transactional steps the connection their writes share with it."""

    def __init__(self, store: SqlStore, connection: Connection) -> None:
        self._store = store
        self.connection = connection

    def advance(
        self,
        saga_id: str,
        expected_seq: int,
        changes: SagaChanges,
        entries: Sequence[LogRecord],
    ) -> None:
        """Update the saga row (fenced on ``expected_seq``) and append log ``entries``.

        Raises:
            ConcurrentUpdate: the row's ``seq`` is no longer ``expected_seq``.
        """
        params = dict(changes)
        params["b_id"] = saga_id
        params["b_seq"] = expected_seq
        done = self.connection.execute(self._store._update, params)
        if done.rowcount != 1:
            raise ConcurrentUpdate(saga_id)
        if entries:
            self.connection.execute(self._store._insert_log, list(entries))


class _Writer:
    """A pooled DBAPI connection the hot path writes on, with its cursor."""

    __slots__ = ("cursor", "dbapi", "fairy")

    def __init__(self, fairy: Any) -> None:
        self.fairy = fairy
        self.dbapi = fairy.driver_connection
        self.cursor = self.dbapi.cursor()


class _Writers:
    """The connections the store writes on: one per thread while it runs a saga.

    Between sagas a writer waits in an idle list instead of going back to the
    pool (a pool return resets the connection, which costs a third of a saga),
    so the store holds as many connections as sagas ever ran at once. Whoever
    disposes of the engine also closes them; a forked child leaves the
    parent's alone.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._all: list[_Writer] = []
        self._idle: list[_Writer] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        event.listen(engine, "engine_disposed", self._close_all)

    def current(self) -> _Writer:
        """This thread's writer, taken from the idle ones or the pool on first use."""
        if self._pid != os.getpid():
            self._forget()
        writer: _Writer | None = getattr(self._local, "writer", None)
        if writer is None:
            with self._lock:
                writer = self._idle.pop() if self._idle else None
            if writer is None:
                writer = _Writer(self._engine.raw_connection())
                with self._lock:
                    self._all.append(writer)
            self._local.writer = writer
        return writer

    def release(self) -> None:
        """This thread's writer goes idle."""
        writer = getattr(self._local, "writer", None)
        if writer is not None:
            self._local.writer = None
            with self._lock:
                self._idle.append(writer)

    def discard(self) -> None:
        """Drop this thread's writer (it could not even roll back)."""
        writer = self._local.writer
        self._local.writer = None
        with self._lock:
            self._all.remove(writer)
        with contextlib.suppress(Exception):
            writer.fairy.invalidate()

    def _close_all(self, _engine: Engine) -> None:
        with self._lock:
            writers, self._all, self._idle = self._all, [], []
        self._local = threading.local()
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.fairy.invalidate()  # closes the DBAPI connection (its pool is gone)

    def _forget(self) -> None:
        # A forked child: the writers are the parent's connections; leave them alone.
        self._all, self._idle = [], []
        self._local = threading.local()
        self._pid = os.getpid()


class SqlStore:
    """Reads and writes sagas and their logs.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._ready = False
        self._update = (
            sagas.update()
            .where(sagas.c.saga_id == sa.bindparam("b_id"), sagas.c.seq == sa.bindparam("b_seq"))
            .values(
                status=sa.bindparam("status"),
                state=sa.bindparam("state"),
                attempt=sa.bindparam("attempt"),
                seq=sa.bindparam("seq"),
                error=sa.bindparam("error"),
                due_at=sa.bindparam("due_at"),
                updated_at=sa.bindparam("updated_at"),
            )
        )
        self._insert_log = log.insert()
        self._insert_saga = sagas.insert()
        # The hot path: DBAPI SQL with named parameters (the engine's dicts as they are),
        # or None for drivers with positional parameter styles (they use SQLAlchemy).
        dialect: Any = engine.dialect
        if dialect.name == "sqlite":
            from sqlalchemy.dialects import sqlite

            dialect = sqlite.dialect(paramstyle="named")
        self._sql: dict[str, str] | None = None
        if dialect.paramstyle in ("named", "pyformat"):
            self._sql = {
                "update": str(self._update.compile(dialect=dialect)),
                "insert_log": str(self._insert_log.compile(dialect=dialect)),
                "insert_saga": str(self._insert_saga.compile(dialect=dialect)),
            }
        self._begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else None
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._writers = _Writers(engine)
        #: Transactions committed by ``create`` and ``advance``; they bypass
        #: SQLAlchemy's ``commit`` event (benchmarks/throughput.py counts them here).
        self.commits = 0

    def close(self) -> None:
        """Close the store's connections: the writers' and the pool's."""
        self.engine.dispose()

    def release(self) -> None:
        """This thread stops writing for now (the engine calls it when a saga stops
        running): its connection waits for the next writer."""
        self._writers.release()

    def _wrap(self, exc: Exception, statement: str) -> Exception:
        """A driver error as SQLAlchemy would raise it (``sa.exc.IntegrityError``, ...)."""
        return sa.exc.DBAPIError.instance(
            statement, None, exc, self._dbapi_error, dialect=self.engine.dialect
        )

    def _direct(self, statement: str, work: Callable[[Any], None]) -> None:
        """Run ``work(cursor)`` in a transaction on this thread's writer and commit;
        on error roll back and re-raise driver errors wrapped as SQLAlchemy would
        (naming ``statement``)."""
        writer = self._writers.current()
        cur = writer.cursor
        try:
            if self._begin is not None:
                cur.execute(self._begin)
            work(cur)
            writer.dbapi.commit()
        except BaseException as exc:
            try:
                writer.dbapi.rollback()
            except Exception:
                self._writers.discard()
            if isinstance(exc, self._dbapi_error):
                raise self._wrap(exc, statement) from exc
            raise
        self.commits += 1

    def _insert_entries(self, cur: Any, entries: Sequence[LogRecord]) -> None:
        assert self._sql is not None
        if len(entries) == 1:
            cur.execute(self._sql["insert_log"], entries[0])
        elif entries:
            cur.executemany(self._sql["insert_log"], entries)

    # -- schema -----------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables if they are missing and record the schema version."""
        if self._ready:
            return
        with self.engine.begin() as conn:
            metadata.create_all(conn)
            found = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
            if found is None:
                conn.execute(
                    schema_version.insert().values(version=SCHEMA_VERSION, applied_at=time.time())
                )
            elif found > SCHEMA_VERSION:
                raise SchemaVersionError(found, SCHEMA_VERSION)
        self._ready = True

    def schema_version(self) -> int | None:
        """The schema version recorded in the database."""
        with self._reading() as conn:
            return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()

    # -- writes -----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open a transaction; it commits when the block ends and rolls back on error."""
        with self.engine.begin() as conn:
            yield Transaction(self, conn)

    def advance(
        self,
        saga_id: str,
        expected_seq: int,
        changes: SagaChanges,
        entries: Sequence[LogRecord],
    ) -> None:
        """``Transaction.advance`` in a transaction of its own."""
        sql = self._sql
        if sql is None:
            with self.engine.begin() as conn:
                Transaction(self, conn).advance(saga_id, expected_seq, changes, entries)
            return
        params = dict(changes)
        params["b_id"] = saga_id
        params["b_seq"] = expected_seq

        def work(cur: Any) -> None:
            cur.execute(sql["update"], params)
            if cur.rowcount != 1:
                raise ConcurrentUpdate(saga_id)
            self._insert_entries(cur, entries)

        self._direct(sql["update"], work)

    def create(self, row: NewSaga, entries: Sequence[LogRecord]) -> SagaRow | None:
        """Insert a new saga row and its first log entries, in one transaction.

        Returns:
            ``None`` when the saga was created; the existing row when a saga
            with that id already exists (nothing is written then).
        """
        try:
            self._create(row, entries)
        except sa.exc.IntegrityError:
            existing = self.get(row["saga_id"])
            if existing is None:  # pragma: no cover - a concurrent delete
                raise
            return existing
        return None

    def _create(self, row: NewSaga, entries: Sequence[LogRecord]) -> None:
        sql = self._sql
        if sql is None:
            with self.engine.begin() as conn:
                conn.execute(self._insert_saga, dict(row))
                if entries:
                    conn.execute(self._insert_log, list(entries))
            return

        def work(cur: Any) -> None:
            cur.execute(sql["insert_saga"], row)
            self._insert_entries(cur, entries)

        self._direct(sql["insert_saga"], work)

    # -- reads ------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    def get(self, saga_id: str) -> SagaRow | None:
        """The saga row, or ``None``."""
        with self._reading() as conn:
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
        return None if r is None else SagaRow(*r)

    def log(self, saga_id: str) -> list[LogRow]:
        """The saga's log, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return [LogRow(*r) for r in rows]

    def incomplete(self, limit: int | None = None) -> list[SagaRow]:
        """Sagas still ``started`` or ``compensating``, found through the partial index.

        The statuses are rendered as SQL literals: with bound parameters SQLite
        (and a generic PostgreSQL plan) cannot tell that the query matches the
        index's ``WHERE status IN ('started', 'compensating')`` and scans the table.
        """
        statuses: Any = sa.bindparam(
            "statuses", list(INCOMPLETE), expanding=True, literal_execute=True
        )
        q = sa.select(sagas).where(sagas.c.status.in_(statuses)).order_by(sagas.c.created_at)
        if limit is not None:
            q = q.limit(limit)
        with self._reading() as conn:
            return [SagaRow(*r) for r in conn.execute(q)]

    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SagaRow]:
        """Sagas, newest first, optionally filtered by status and name."""
        q = (
            sa.select(sagas)
            .order_by(sagas.c.created_at.desc(), sagas.c.saga_id)
            .limit(limit)
            .offset(offset)
        )
        if status is not None:
            q = q.where(sagas.c.status == status)
        if name is not None:
            q = q.where(sagas.c.name == name)
        with self._reading() as conn:
            return [SagaRow(*r) for r in conn.execute(q)]
