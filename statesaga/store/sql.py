"""The SQL store: every read and write statesaga makes, on SQLAlchemy Core.

Each saga transition is one transaction that appends log entries and updates
the saga row, fenced on the row's ``seq`` so a runner that lost the race
writes nothing. SQLite is opened in WAL mode with ``BEGIN IMMEDIATE`` writers
and a busy timeout; PostgreSQL is used as it is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from statesaga.errors import ConcurrentUpdate
from statesaga.store.schema import INCOMPLETE, SCHEMA_VERSION, log, metadata, sagas, schema_version

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@attrs.frozen
class SagaRow:
    """A saga row as stored."""

    saga_id: str
    name: str
    version: int
    fingerprint: str
    status: str
    state: str
    attempt: int
    seq: int
    input: str
    error: str | None
    due_at: float | None
    created_at: float
    updated_at: float


@attrs.frozen
class LogRow:
    """A saga log entry as stored."""

    saga_id: str
    seq: int
    step: str
    status: str
    attempt: int
    result: str | None
    error: str | None
    at: float


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
            conn.exec_driver_sql("BEGIN IMMEDIATE")

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
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        """Update the saga row (fenced on ``expected_seq``) and append log ``entries``.

        ``changes`` must give ``status``, ``state``, ``attempt``, ``seq``,
        ``error``, ``due_at`` and ``updated_at``.

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
                raise RuntimeError(
                    f"the database has statesaga schema version {found}, newer than this "
                    f"statesaga's {SCHEMA_VERSION}; upgrade statesaga"
                )
        self._ready = True

    def schema_version(self) -> int | None:
        """The schema version recorded in the database."""
        with self.engine.connect() as conn:
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
        changes: Mapping[str, Any],
        entries: Sequence[Mapping[str, Any]],
    ) -> None:
        """``Transaction.advance`` in a transaction of its own."""
        with self.engine.begin() as conn:
            Transaction(self, conn).advance(saga_id, expected_seq, changes, entries)

    def create(
        self, row: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> SagaRow | None:
        """Insert a new saga row and its first log entries, in one transaction.

        Returns:
            ``None`` when the saga was created; the existing row when a saga
            with that id already exists (nothing is written then).
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(self._insert_saga, dict(row))
                if entries:
                    conn.execute(self._insert_log, list(entries))
        except sa.exc.IntegrityError:
            existing = self.get(row["saga_id"])
            if existing is None:  # pragma: no cover - a concurrent delete
                raise
            return existing
        return None

    # -- reads ------------------------------------------------------------

    def get(self, saga_id: str) -> SagaRow | None:
        """The saga row, or ``None``."""
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
        return None if r is None else SagaRow(**r._mapping)

    def log(self, saga_id: str) -> list[LogRow]:
        """The saga's log, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return [LogRow(**r._mapping) for r in rows]

    def incomplete(self, limit: int | None = None) -> list[SagaRow]:
        """Sagas still ``started`` or ``compensating``, found through the partial index."""
        q = sa.select(sagas).where(sagas.c.status.in_(INCOMPLETE)).order_by(sagas.c.created_at)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [SagaRow(**r._mapping) for r in conn.execute(q)]

    def list(
        self, *, status: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[SagaRow]:
        """Sagas, newest first, optionally filtered by status and name."""
        q = sa.select(sagas).order_by(sagas.c.created_at.desc()).limit(limit)
        if status is not None:
            q = q.where(sagas.c.status == status)
        if name is not None:
            q = q.where(sagas.c.name == name)
        with self.engine.connect() as conn:
            return [SagaRow(**r._mapping) for r in conn.execute(q)]
