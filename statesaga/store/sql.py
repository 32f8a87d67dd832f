"""The SQL store: every read and write statesaga makes, on SQLAlchemy Core.

Each saga transition is one transaction that appends log entries and updates
the saga row, fenced on the row's ``seq`` and ``lease_epoch`` so a runner that
lost the race, or its lease, writes nothing. Runners take sagas with
``claim`` — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite
— and keep them with ``extend``.

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
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import (
    ConcurrentUpdate,
    EngineClosed,
    NestedTransaction,
    SchemaMissing,
    SchemaVersionError,
)
from statesaga.store import migrations
from statesaga.store._connect import READ_ONLY
from statesaga.store._listen import Listener
from statesaga.store._rows import LogRecord, LogRow, NewSaga, SagaChanges, SagaRow
from statesaga.store._writers import Writers
from statesaga.store.schema import INCOMPLETE, SCHEMA_VERSION, log, sagas

#: The SQLite files this thread has a transactional step's transaction open on.
_open_sqlite = threading.local()


def _sqlite_files_open() -> set[str]:
    files: set[str] | None = getattr(_open_sqlite, "files", None)
    if files is None:
        files = _open_sqlite.files = set()
    return files


#: A definition a runner can drive: (name, version, fingerprint).
DefinitionKey = tuple[str, int, str]


def _incomplete() -> Any:
    # Rendered as SQL literals: with bound parameters SQLite (and a generic
    # PostgreSQL plan) cannot tell that a query matches the partial index's
    # ``WHERE status IN ('started', 'compensating')`` and scans the table.
    statuses: Any = sa.bindparam("statuses", list(INCOMPLETE), expanding=True, literal_execute=True)
    return sagas.c.status.in_(statuses)


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
        done = self.connection.execute(self._store._update, _params(saga_id, fence, changes))
        if done.rowcount != 1:
            raise ConcurrentUpdate(saga_id)
        if entries:
            self.connection.execute(self._store._insert_log, list(entries))


def _params(saga_id: str, fence: tuple[int, int], changes: SagaChanges) -> dict[str, Any]:
    params: dict[str, Any] = dict(changes)
    params["b_id"] = saga_id
    params["b_seq"], params["b_epoch"] = fence
    return params


class SqlStore:
    """Reads and writes sagas and their logs.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
        writers: connections the hot path may open (outside the pool, which
            is left to readers and transactional steps); ``reserve`` raises it.
    """

    def __init__(self, engine: Engine, *, writers: int | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # The SQLite file, for the nested-write guard (None: not SQLite, or in memory).
        self._database = engine.url.database if self.dialect == "sqlite" else None
        self._ready = False
        self._closed = False
        self._users = threading.Condition()
        self._in_use = 0  # pool connections checked out through _connect/_writing
        # A connection coming back to a closed store's pool is closed, not kept:
        # after dispose() it would go back to a pool nobody will close.
        sa.event.listen(engine, "checkin", self._checkin)
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
        self._writers = Writers(engine, writers or 8)
        #: Transactions committed by ``create`` and ``advance``; they bypass
        #: SQLAlchemy's ``commit`` event (benchmarks/throughput.py counts them here).
        self.commits = 0

    def reserve(self, writers: int) -> None:
        """Allow at least ``writers`` transitions to commit at once (a worker of that
        concurrency starts)."""
        self._writers.grow(writers)

    @property
    def url(self) -> str:
        """The database URL, its password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self, timeout: float | None = 30.0, *, release: str | None = None) -> None:
        """Refuse new work, wait (up to ``timeout``) for commits in flight, let go
        of every saga ``release`` (an owner) still holds, and close every connection."""
        self._writers.close(timeout)
        with self._users:
            self._closed = True
            self._users.wait_for(lambda: self._in_use == 0, timeout)
        if release is not None:
            with contextlib.suppress(Exception), self.engine.begin() as conn:
                conn.execute(
                    sagas.update()
                    .where(sagas.c.owner == release)
                    .values(owner=None, lease_until=None)
                )
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
            cur.execute(self._sql["insert_log"], entries[0])
        elif entries:
            cur.executemany(self._sql["insert_log"], entries)

    def _checkin(self, dbapi_connection: Any, _record: Any) -> None:
        if self._closed and dbapi_connection is not None:
            with contextlib.suppress(Exception):
                dbapi_connection.close()

    @contextlib.contextmanager
    def _using(self) -> Iterator[None]:
        """Count a use of the engine's pool, so that ``close`` waits for it: a
        connection checked out while the pool is disposed would be left open."""
        with self._users:
            if self._closed:
                raise EngineClosed()
            self._in_use += 1
        try:
            yield
        finally:
            with self._users:
                self._in_use -= 1
                self._users.notify_all()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._using(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        self._not_nested()
        with self._using(), self.engine.begin() as conn:
            yield conn

    def _not_nested(self) -> None:
        """On SQLite, refuse a write from inside this thread's own open transaction
        on the same file: it would wait for the lock that transaction holds."""
        if self._database is not None and self._database in _sqlite_files_open():
            raise NestedTransaction(self._database)

    # -- schema -----------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the schema if the database has none, or upgrade an older one.

        Raises:
            SchemaVersionError: the schema is newer, unknown or unversioned.
        """
        if not self._ready:
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
            files = _sqlite_files_open()
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
        params = _params(saga_id, fence, changes)

        def work(cur: Any) -> None:
            cur.execute(sql["update"], params)
            if cur.rowcount != 1:
                raise ConcurrentUpdate(saga_id)
            self._insert_entries(cur, entries)

        self._direct(sql["update"], work)

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
            cur.execute(sql["insert_saga"], row)
            self._insert_entries(cur, entries)
            if notify:
                cur.execute(f"NOTIFY {CHANNEL}")

        self._direct(sql["insert_saga"], work)

    # -- ownership ----------------------------------------------------------

    def claim(
        self,
        owner: str,
        until: float,
        now: float,
        definitions: Iterable[DefinitionKey],
        *,
        limit: int = 1,
        saga_id: str | None = None,
        due_only: bool = True,
        exclude: Iterable[str] = (),
    ) -> list[SagaRow]:
        """Take runnable sagas: unfinished, of one of ``definitions``, their lease
        free or expired, and (with ``due_only``) due. Each taken saga's lease
        epoch grows by one, which fences off whoever held it before.

        Args:
            owner: the claiming runner's id.
            until: the new leases' expiry.
            now: the time leases and due times are compared with.
            definitions: the definitions the runner can drive.
            limit: at most this many.
            saga_id: only this saga.
            due_only: skip sagas waiting out a retry delay.
            exclude: never these sagas.

        Returns:
            The claimed rows, as they are now.
        """
        keys = list(definitions)
        if not keys or limit < 1:
            return []
        conditions = [
            _incomplete(),
            sa.or_(sagas.c.owner.is_(None), sagas.c.lease_until < now),
            sa.tuple_(sagas.c.name, sagas.c.version, sagas.c.fingerprint).in_(keys),
        ]
        if due_only:
            conditions.append(sa.or_(sagas.c.due_at.is_(None), sagas.c.due_at <= now))
        if saga_id is not None:
            conditions.append(sagas.c.saga_id == saga_id)
        skip = list(exclude)
        if skip:
            conditions.append(sagas.c.saga_id.not_in(skip))
        pick = sa.select(sagas.c.saga_id).where(*conditions).order_by(sagas.c.created_at)
        pick = pick.limit(limit).with_for_update(skip_locked=True)
        take = (
            sagas.update()
            .where(sagas.c.saga_id.in_(pick.scalar_subquery()))
            .values(owner=owner, lease_until=until, lease_epoch=sagas.c.lease_epoch + 1)
            .returning(*sagas.c)
        )
        with self._writing() as conn:
            return [SagaRow(*r) for r in conn.execute(take)]

    def extend(self, owner: str, until: float) -> set[str]:
        """Extend every lease ``owner`` holds to ``until``; return the sagas it still holds."""
        keep = (
            sagas.update()
            .where(sagas.c.owner == owner, _incomplete())
            .values(lease_until=until)
            .returning(sagas.c.saga_id)
        )
        with self._writing() as conn:
            return {r[0] for r in conn.execute(keep)}

    def release(self, owner: str, saga_ids: Iterable[str]) -> None:
        """Let go of the leases ``owner`` holds on ``saga_ids`` (they become
        claimable at once; their epoch is left as it is)."""
        ids = list(saga_ids)
        if not ids:
            return
        free = (
            sagas.update()
            .where(sagas.c.owner == owner, sagas.c.saga_id.in_(ids))
            .values(owner=None, lease_until=None)
        )
        with self._writing() as conn:
            conn.execute(free)

    def db_time(self) -> float | None:
        """The database server's clock, in UNIX seconds (``None`` on SQLite, which
        runs on the application's own machine and clock)."""
        if self.dialect != "postgresql":
            return None
        with self._reading() as conn:
            return float(
                conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
            )

    def listen(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake()`` whenever a runnable saga is announced (PostgreSQL's
        ``LISTEN``); ``None`` on a database that cannot announce (SQLite: poll)."""
        if self.dialect != "postgresql":
            return None
        return Listener(self.engine, CHANNEL, wake)

    def next_due(self, definitions: Iterable[DefinitionKey]) -> float | None:
        """When the earliest saga of ``definitions`` waiting out a delay is due."""
        keys = list(definitions)
        if not keys:
            return None
        q = sa.select(sa.func.min(sagas.c.due_at)).where(
            _incomplete(),
            sagas.c.due_at.is_not(None),
            sa.tuple_(sagas.c.name, sagas.c.version, sagas.c.fingerprint).in_(keys),
        )
        with self._reading() as conn:
            found = conn.execute(q).scalar()
        return None if found is None else float(found)

    # -- reads ------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    def get(self, saga_id: str) -> SagaRow | None:
        """The saga row, or ``None``."""
        with self._reading() as conn:
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
        return None if r is None else SagaRow(*r)

    def saga(self, saga_id: str) -> tuple[SagaRow | None, list[LogRow]]:
        """The saga row and its log, read in one snapshot (a runner moving the saga
        meanwhile cannot make them disagree)."""
        with self._reading() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return (None if r is None else SagaRow(*r)), [LogRow(*x) for x in rows]

    def log(self, saga_id: str) -> list[LogRow]:
        """The saga's log, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return [LogRow(*r) for r in rows]

    def incomplete(
        self, limit: int | None = None, *, except_: Iterable[DefinitionKey] = ()
    ) -> list[SagaRow]:
        """Sagas still ``started`` or ``compensating``, found through the partial
        index, oldest first; ``except_``: leave out those of these definitions."""
        q = sa.select(sagas).where(_incomplete()).order_by(sagas.c.created_at)
        keys = list(except_)
        if keys:
            q = q.where(
                sa.not_(sa.tuple_(sagas.c.name, sagas.c.version, sagas.c.fingerprint).in_(keys))
            )
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

    # -- for the command line: paging and id prefixes ------------------------

    def count(self, *, status: str | None = None, name: str | None = None) -> int:
        """How many sagas ``list`` with the same filters would page through."""
        q = sa.select(sa.func.count()).select_from(sagas)
        if status is not None:
            q = q.where(sagas.c.status == status)
        if name is not None:
            q = q.where(sagas.c.name == name)
        with self._reading() as conn:
            return int(conn.execute(q).scalar_one())

    def ids_starting_with(self, prefix: str, limit: int = 10) -> Sequence[str]:
        """Up to ``limit`` saga ids that start with ``prefix`` (exactly: case
        counts, ``%`` and ``_`` are plain characters), sorted."""
        q = (
            sa.select(sagas.c.saga_id)
            .where(
                sagas.c.saga_id.startswith(prefix, autoescape=True),
                # SQLite's LIKE ignores case; this makes the match exact everywhere.
                sa.func.substr(sagas.c.saga_id, 1, len(prefix)) == prefix,
            )
            .order_by(sagas.c.saga_id)
            .limit(limit)
        )
        with self._reading() as conn:
            return list(conn.execute(q).scalars())


#: The PostgreSQL channel a new runnable saga is announced on.
CHANNEL = "statesaga_runnable"
