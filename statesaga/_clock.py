"""One clock for every process sharing a database: the server's."""

from __future__ import annotations

import threading
from collections.abc import Callable

from statesaga.store import SqlStore


class DbClock:
    """A local clock corrected to the database server's: the offset between them
    is measured once, on first use, so every process sharing the database reads
    the same time (within the round trip), whatever its own clock says."""

    def __init__(self, store: SqlStore, local: Callable[[], float]) -> None:
        self._store = store
        self._local = local
        self._offset: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if self._offset is None:
            with self._lock:
                if self._offset is None:
                    before = self._local()
                    server = self._store.db_time()
                    after = self._local()
                    self._offset = 0.0 if server is None else server - (before + after) / 2
        return self._local() + self._offset
