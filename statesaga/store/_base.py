"""What every part of the store shares: its engine, and the connections it lends.

``SqlStore`` is assembled from parts with one job each (``_reads``, ``_claims``
and the writes in ``sql``); this base gives them the engine and the three ways
to borrow one of its pool's connections — to read, to write, or as it is —
each counted, so that closing the store waits for them instead of disposing of
the pool under them. The hot path borrows its writers elsewhere (``_writers``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import EngineClosed, NestedTransaction
from statesaga.store._connect import READ_ONLY


class _OpenFiles(threading.local):
    """Per thread, from its first use: the SQLite files this thread has a
    transactional step's transaction open on (an attribute every thread has:
    ``getattr`` with a default on a missing one costs an exception per commit)."""

    def __init__(self) -> None:
        self.files: set[str] = set()


_open_sqlite = _OpenFiles()


def sqlite_files_open() -> set[str]:
    """The SQLite files this thread has a transactional step's transaction open on."""
    return _open_sqlite.files


class StoreBase:
    """The engine the store runs on, and its pool's connections, lent and counted.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # The SQLite file, for the nested-write guard (None: not SQLite, or in memory).
        self._database = engine.url.database if self.dialect == "sqlite" else None
        self._closed = False
        self._users = threading.Condition()
        self._in_use = 0  # pool connections checked out through _connect/_writing
        # A connection coming back to a closed store's pool is closed, not kept:
        # after dispose() it would go back to a pool nobody will close.
        sa.event.listen(engine, "checkin", self._checkin)

    @property
    def url(self) -> str:
        """The database URL, its password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def _stop_lending(self, timeout: float | None) -> None:
        """Refuse new uses of the pool and wait (up to ``timeout``) for those in flight."""
        with self._users:
            self._closed = True
            self._users.wait_for(lambda: self._in_use == 0, timeout)

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

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._connect() as conn:
            yield conn.execution_options(**{READ_ONLY: True})

    def _not_nested(self) -> None:
        """On SQLite, refuse a write from inside this thread's own open transaction
        on the same file: it would wait for the lock that transaction holds."""
        if self._database is not None and self._database in _open_sqlite.files:
            raise NestedTransaction(self._database)
