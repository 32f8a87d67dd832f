"""The SQL store: every read and write statesaga makes, on SQLAlchemy Core.

``SqlStore`` is assembled from parts with one job each: the engine and the
connections it lends (``_base``), the reads (``_reads``), claims and leases
(``_claims``), and, here, the writes: schema upgrades and the transactions
that record transitions.

Each saga transition is one transaction that appends log entries and updates
the saga row, fenced on the row's ``seq`` and ``lease_epoch`` so a runner that
lost the race, or its lease, writes nothing.

The hot path (``create`` and ``advance``: every transition of a saga without
transactional steps) skips SQLAlchemy's per-statement machinery, which costs
several times the commit itself on SQLite: it runs the statements, compiled
once from the same Core constructs, on a DBAPI cursor lent for the one
transaction (``_writers``). Driver errors are re-raised wrapped as SQLAlchemy
would wrap them. Everything else (transactional steps, reads, claims, DDL)
uses SQLAlchemy connections as usual.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import ConcurrentUpdate, SchemaMissing, SchemaVersionError
from statesaga.store import migrations
from statesaga.store._base import sqlite_files_open
from statesaga.store._claims import CHANNEL, Claims
from statesaga.store._operations import Operations
from statesaga.store._reads import Reads
from statesaga.store._rows import LogRecord, NewSaga, SagaChanges, SagaRow
from statesaga.store._signals import Signals
from statesaga.store._writers import Writers
from statesaga.store.schema import SCHEMA_VERSION, log, sagas


class Transaction:
    """One open transaction: the saga transition it records, and for
    transactional steps the connection their writes share with it."""

    def __init__(self, store: SqlStore, connection: Connection) -> None:
        self._store = store
        self.connection = connection

    def advance(
        self,
        saga_id: str,
        fence: tuple[int, int],
        changes: SagaChanges,
        entries: Sequence[LogRecord],
    ) -> None:
        """Update the saga row and append log ``entries``, if the row is still at
        ``fence`` = (seq, lease epoch).

        Raises:
            ConcurrentUpdate: another runner moved the saga or took its lease.
        """
        store = self._store
        if store._sql is None:
            done = self.connection.execute(store._update, _params(saga_id, fence, changes))
            if done.rowcount != 1:
                raise ConcurrentUpdate(saga_id)
            if entries:
                self.connection.execute(store._insert_log, list(entries))
            return
        # The hot path's positional SQL, on this transaction's own DBAPI connection.
        cur = self.connection.connection.cursor()
        try:
            store._write(cur, saga_id, fence, changes, entries)
        except store._dbapi_error as exc:
            raise store._wrap(exc, store._sql["update"]) from exc
        finally:
            cur.close()


def _positional(statement: Any, dialect: Any) -> tuple[str, tuple[str, ...]]:
    """``statement`` compiled for a dialect with positional parameters: its SQL and
    the names of its parameters, in order."""
    compiled = statement.compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup or ())


def _params(saga_id: str, fence: tuple[int, int], changes: SagaChanges) -> dict[str, Any]:
    params: dict[str, Any] = dict(changes)
    params["b_id"] = saga_id
    params["b_seq"], params["b_epoch"] = fence
    return params


class SqlStore(Claims, Reads, Signals, Operations):
    """Reads and writes sagas and their logs.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
        writers: connections the hot path may open (outside the pool, which
            is left to readers and transactional steps); ``reserve`` raises it.
    """

    def __init__(self, engine: Engine, *, writers: int | None = None) -> None:
        super().__init__(engine)
        self._ready = False
        self._update = (
            sagas.update()
            .where(
                sagas.c.saga_id == sa.bindparam("b_id"),
                sagas.c.seq == sa.bindparam("b_seq"),
                sagas.c.lease_epoch == sa.bindparam("b_epoch"),
            )
            .values(
                {
                    c: sa.bindparam(c)
                    for c in SagaChanges.__annotations__  # the columns a transition changes
                }
            )
        )
        self._insert_log = log.insert()
        self._insert_saga = sagas.insert()
        # The hot path: DBAPI SQL with positional parameters (SQLite's ``?``, psycopg's
        # ``%s``), each statement's taken from the journal's dicts in its order by a
        # getter made once: a driver binds a tuple faster than it looks up names in a
        # dict. None for other drivers (they use SQLAlchemy).
        dialect: Any = engine.dialect
        if dialect.paramstyle == "pyformat":
            dialect = type(dialect)(paramstyle="format")
        self._sql: dict[str, str] | None = None
        if dialect.name == "sqlite" or dialect.paramstyle == "format":
            update, update_order = _positional(self._update, dialect)
            fence = ("b_id", "b_seq", "b_epoch")
            if update_order[-3:] != fence:  # pragma: no cover - SQLAlchemy orders SET, then WHERE
                raise AssertionError(f"unexpected parameter order {update_order}")
            insert_log, log_order = _positional(self._insert_log, dialect)
            insert_saga, saga_order = _positional(self._insert_saga, dialect)
            self._sql = {"update": update, "insert_log": insert_log, "insert_saga": insert_saga}
            self._changes_of = operator.itemgetter(*update_order[:-3])
            self._entry_of = operator.itemgetter(*log_order)
            self._saga_of = operator.itemgetter(*saga_order)
        self._begin = "BEGIN IMMEDIATE" if self.dialect == "sqlite" else None
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._writers = Writers(engine, writers or 8)
        #: Transactions committed by ``create`` and ``advance``; they bypass
        #: SQLAlchemy's ``commit`` event (benchmarks/throughput.py counts them here).
        self.commits = 0

    def reserve(self, writers: int) -> None:
        """Allow at least ``writers`` transitions to commit at once (a worker of that
        concurrency starts)."""
        self._writers.grow(writers)

    def close(self, timeout: float | None = 30.0, *, release: str | None = None) -> None:
        """Refuse new work, wait (up to ``timeout``) for commits in flight, let go
        of every saga ``release`` (an owner) still holds, and close every connection."""
        self._writers.close(timeout)
        self._stop_lending(timeout)
        if release is not None:
            # The pool's idle connections were closed as they came back (see
            # ``_checkin``) but are still in it: start from a fresh pool, or the
            # release would get a closed connection and the leases would stay.
            self.engine.dispose()
            self._release_all(release)
        self.engine.dispose()

    def _wrap(self, exc: Exception, statement: str) -> Exception:
        """A driver error as SQLAlchemy would raise it (``sa.exc.IntegrityError``, ...)."""
        return sa.exc.DBAPIError.instance(
            statement, None, exc, self._dbapi_error, dialect=self.engine.dialect
        )

    def _direct(self, statement: str, work: Callable[[Any], None]) -> None:
        """Run ``work(cursor)`` in a transaction on a lent writer and commit; on
        error roll back and re-raise driver errors wrapped as SQLAlchemy would
        (naming ``statement``)."""
        self._not_nested()
        writer = self._writers.take()
        ok = False
        try:
            cur = writer.cursor
            if self._begin is not None:
                cur.execute(self._begin)
            work(cur)
            writer.dbapi.commit()
            ok = True
        except self._dbapi_error as exc:
            raise self._wrap(exc, statement) from exc
        finally:
            self._writers.give(writer, ok)
        self.commits += 1

    def _insert_entries(self, cur: Any, entries: Sequence[LogRecord]) -> None:
        assert self._sql is not None
        if len(entries) == 1:
            cur.execute(self._sql["insert_log"], self._entry_of(entries[0]))
        elif entries:
            cur.executemany(self._sql["insert_log"], map(self._entry_of, entries))

    # -- schema -----------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the schema if the database has none, or upgrade an older one.

        Raises:
            SchemaVersionError: the schema is newer, unknown or unversioned.
        """
        if not self._ready:
            with self._using():  # a closed store raises EngineClosed
                migrations.upgrade(self.engine)
            self._ready = True

    def require_schema(self) -> None:
        """Check, without writing, that the database has the current schema.

        Raises:
            SchemaMissing: it has none.
            SchemaVersionError: it has another version (run ``statesaga db upgrade``).
        """
        if self._ready:
            return
        found = self.schema_version()
        if found is None:
            raise SchemaMissing(self.url)
        migrations.check(found)
        if found < SCHEMA_VERSION:
            raise SchemaVersionError.older(found, SCHEMA_VERSION)
        self._ready = True

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (``None``: no schema).

        Raises:
            SchemaVersionError: statesaga's tables exist without a version.
        """
        with self._reading() as conn:
            return migrations.found_version(conn)

    # -- writes -----------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open a transaction; it commits when the block ends and rolls back on error."""
        with self._writing() as conn:
            if self._database is None:
                yield Transaction(self, conn)
                return
            files = sqlite_files_open()
            files.add(self._database)
            try:
                yield Transaction(self, conn)
            finally:
                files.discard(self._database)

    def advance(
        self,
        saga_id: str,
        fence: tuple[int, int],
        changes: SagaChanges,
        entries: Sequence[LogRecord],
    ) -> None:
        """``Transaction.advance`` in a transaction of its own."""
        sql = self._sql
        if sql is None:
            with self._writing() as conn:
                Transaction(self, conn).advance(saga_id, fence, changes, entries)
            return
        self._direct(sql["update"], lambda cur: self._write(cur, saga_id, fence, changes, entries))

    def _write(
        self,
        cur: Any,
        saga_id: str,
        fence: tuple[int, int],
        changes: SagaChanges,
        entries: Sequence[LogRecord],
    ) -> None:
        """A transition's statements on a DBAPI cursor: the fenced row update, then
        the log entries (positional SQL; see ``__init__``)."""
        assert self._sql is not None
        cur.execute(self._sql["update"], (*self._changes_of(changes), saga_id, *fence))
        if cur.rowcount != 1:
            raise ConcurrentUpdate(saga_id)
        self._insert_entries(cur, entries)

    def create(
        self, row: NewSaga, entries: Sequence[LogRecord], *, notify: bool = False
    ) -> SagaRow | None:
        """Insert a new saga row and its first log entries, in one transaction.

        Args:
            row: the saga row.
            entries: its first log entries.
            notify: wake the workers listening for runnable sagas (PostgreSQL's
                ``NOTIFY``, sent when the transaction commits).

        Returns:
            ``None`` when the saga was created; the existing row when a saga
            with that id already exists (nothing is written then).
        """
        try:
            self._create(row, entries, notify and self.dialect == "postgresql")
        except sa.exc.IntegrityError:
            existing = self.get(row["saga_id"])
            if existing is None:  # pragma: no cover - a concurrent delete
                raise
            return existing
        return None

    def _create(self, row: NewSaga, entries: Sequence[LogRecord], notify: bool) -> None:
        sql = self._sql
        if sql is None:
            with self._writing() as conn:
                conn.execute(self._insert_saga, dict(row))
                if entries:
                    conn.execute(self._insert_log, list(entries))
                if notify:
                    conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            return

        def work(cur: Any) -> None:
            cur.execute(sql["insert_saga"], self._saga_of(row))
            self._insert_entries(cur, entries)
            if notify:
                cur.execute(f"NOTIFY {CHANNEL}")

        self._direct(sql["insert_saga"], work)
