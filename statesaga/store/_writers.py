"""The connections the store's hot path commits on.

A transition takes a writer, commits on it, and gives it back at once: no
connection is held while a handler runs. Writers come from the engine's pool
but stay out of it between transitions, in an idle stack (a pool return resets
the connection, which costs a third of a saga). There are at most ``limit`` of
them — raised to a worker's concurrency when it starts, never beyond what the
pool holds less a share kept for readers and transactional steps — so no number
of threads or sagas can exhaust the pool; a thread that finds every writer busy
waits for one, which is short (a commit).

``close`` refuses new writers, waits for those in use to come back, then
closes them all; a forked child leaves its parent's connections alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from statesaga._errors import EngineClosed


class Writer:
    """A pooled DBAPI connection the hot path writes on, with its cursor."""

    __slots__ = ("cursor", "dbapi", "fairy")

    def __init__(self, fairy: Any) -> None:
        self.fairy = fairy  # SQLAlchemy's handle: closing it closes the connection
        self.dbapi = fairy.driver_connection
        self.cursor = self.dbapi.cursor()

    def close(self) -> None:
        """Close the connection for good (its pool then opens a new one in its place)."""
        with contextlib.suppress(Exception):
            self.dbapi.close()
        with contextlib.suppress(Exception):
            self.fairy.invalidate()


class Writers:
    """At most ``limit`` writers, lent out one transition at a time.

    Args:
        engine: the SQLAlchemy engine whose pool the connections come from.
        limit: how many writers may exist at once.
    """

    def __init__(self, engine: Engine, limit: int) -> None:
        self._engine = engine
        self._cap = _capacity(engine)
        self._limit = max(1, min(limit, self._cap))
        self._idle: list[Writer] = []
        self._count = 0  # writers in existence (idle or lent)
        # The hot path enters the lock itself (C), not the condition (Python).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._waiting = 0  # threads waiting for a writer (``give`` notifies only then)
        self._pid = os.getpid()
        self._cap = _capacity(engine)
        event.listen(engine, "engine_disposed", self._disposed)

    def take(self) -> Writer:
        """A writer for one transaction; give it back with ``give`` (the hot path
        calls these two directly: a context manager costs as much as the locking).

        Raises:
            EngineClosed: the store was closed.
        """
        if self._pid != _PID[0]:  # a forked child (see _after_fork)
            self._forget()
        with self._lock:
            while True:
                if self._closed:
                    raise EngineClosed()
                if self._idle:
                    return self._idle.pop()
                if self._count < self._limit:
                    self._count += 1
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
        try:
            return Writer(self._engine.raw_connection())
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def grow(self, limit: int) -> None:
        """Allow at least ``limit`` writers, as far as the pool allows."""
        with self._cond:
            self._limit = max(self._limit, min(limit, self._cap))
            self._cond.notify_all()

    def give(self, writer: Writer, ok: bool) -> None:
        """Take back a writer; not ``ok`` (its transaction failed), it is rolled back
        first, and closed if even that fails."""
        keep = ok or _rolled_back(writer)
        with self._lock:
            if keep and not self._closed:
                self._idle.append(writer)
            else:
                self._count -= 1
                keep = False
            if self._closed:  # ``close`` waits for every writer to come back
                self._cond.notify_all()
            elif self._waiting:
                self._cond.notify()
        if not keep:
            writer.close()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new writers, wait (up to ``timeout``) for lent ones, close them all."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._count == len(self._idle), timeout)
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for writer in idle:
            writer.close()

    def _disposed(self, _engine: Engine) -> None:
        self.close(timeout=0)

    def _forget(self) -> None:
        # A forked child: the writers are the parent's connections; leave them alone.
        with self._cond:
            self._idle, self._count = [], 0
            self._pid = _PID[0]


#: This process's id, kept current across ``fork`` (cheaper than ``os.getpid()``
#: on every commit).
_PID = [os.getpid()]


def _after_fork() -> None:
    _PID[0] = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _rolled_back(writer: Writer) -> bool:
    try:
        writer.dbapi.rollback()
    except Exception:
        return False
    return True


#: Connections of the pool kept for readers and transactional steps.
READERS = 4


def _capacity(engine: Engine) -> int:
    """How many writers the engine's pool can spare: all it may open, less a share
    for readers (a pool of unknown size: its size; one shared connection: one)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return 1
    overflow = getattr(pool, "_max_overflow", 0)
    return max(1, pool.size() + max(0, overflow) - READERS)
