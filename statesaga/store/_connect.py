"""Opening a database for statesaga: SQLite tuned for many writers, PostgreSQL as
it is, either of them read-only for commands that only look."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

#: Execution option marking a connection that only reads (SQLite: plain BEGIN).
READ_ONLY = "statesaga_read_only"


def make_engine(
    url: str,
    *,
    sqlite_synchronous: str = "NORMAL",
    busy_timeout: float = 30.0,
    read_only: bool = False,
    pool_size: int | None = None,
) -> Engine:
    """Create an SQLAlchemy engine for ``url``, tuned for statesaga.

    For SQLite: WAL journal, the given ``synchronous`` level, a busy timeout and
    ``BEGIN IMMEDIATE`` for every writing transaction (writers queue instead of
    deadlocking on a lock upgrade). Other databases are opened as they are.

    Args:
        url: the database URL.
        sqlite_synchronous: SQLite's ``synchronous`` pragma.
        busy_timeout: seconds an SQLite writer waits for the write lock.
        read_only: open without the right to write: SQLite opens the file
            read-only (and never creates it), PostgreSQL makes every
            transaction read-only.
        pool_size: connections the pool keeps (more are opened on demand up
            to twice that); the default is SQLAlchemy's.
    """
    sync = sqlite_synchronous.upper()
    if sync not in SQLITE_SYNCHRONOUS:
        raise ValueError(
            f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
            f"got {sqlite_synchronous!r}"
        )
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    memory = sqlite and parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {}
    if pool_size is not None and not memory:
        options.update(pool_size=pool_size, max_overflow=pool_size)
    if read_only and sqlite and not memory:
        database = parsed.database or ""
        if not database.startswith("file:"):
            database = f"file:{database}"
        parsed = parsed.set(database=database, query={**parsed.query, "mode": "ro", "uri": "true"})
    elif read_only and parsed.get_backend_name() == "postgresql":
        # Added to the URL's own options (a search_path, say), not in their place.
        given = parsed.query.get("options")
        given = " ".join(given) if isinstance(given, tuple) else (given or "")
        wanted = f"{given} -c default_transaction_read_only=on".strip()
        parsed = parsed.set(query={**parsed.query, "options": wanted})
    engine = sa.create_engine(parsed, **options)
    if sqlite:
        _tune_sqlite(engine, sync, busy_timeout, wal=not (memory or read_only))
    return engine


def _tune_sqlite(engine: Engine, sync: str, busy_timeout: float, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE itself.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        if wal:
            _switch_to_wal(cur, busy_timeout)
        cur.execute(f"PRAGMA synchronous={sync}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front; readers must not queue behind them.
        read = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


def _switch_to_wal(cur: Any, busy_timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the file is busy.

    Connections switching a new file at once can get "database is locked" at
    once: SQLite does not call its busy handler where waiting could deadlock (a
    connection holding a shared lock that wants an exclusive one). Having failed,
    this connection holds no lock, so trying again is safe; one of the racers
    converts the file and the others find it in WAL.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
