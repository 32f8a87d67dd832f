"""PostgreSQL ``LISTEN`` for runnable sagas: a worker wakes the moment a saga is
started elsewhere instead of waiting for its next poll."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

log = logging.getLogger("statesaga")


class Listener:
    """Calls ``wake()`` whenever a ``NOTIFY channel`` arrives, from a thread of its own
    on a connection of its own (outside the pool, in autocommit mode).

    Args:
        engine: the PostgreSQL engine to connect with.
        channel: the channel to listen on.
        wake: called on every notification (and after a reconnect, in case one was missed).
    """

    def __init__(self, engine: Engine, channel: str, wake: Callable[[], None]) -> None:
        self._engine = engine
        self._channel = channel
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statesaga-listen", daemon=True)
        self._thread.start()

    def _connect(self) -> Any:
        cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
        conn = self._engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
        conn.autocommit = True
        conn.execute(f"LISTEN {self._channel}")
        return conn

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                log.warning("statesaga: cannot LISTEN for runnable sagas (%s); polling", exc)
                self._stop.wait(5.0)
                continue
            self._wake()
            try:
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=0.5, stop_after=1):
                        self._wake()
            except Exception as exc:
                log.warning("statesaga: LISTEN connection lost (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def close(self) -> None:
        """Stop listening (within half a second)."""
        self._stop.set()
        self._thread.join(timeout=2)
