"""The leases one engine holds, kept alive by a heartbeat.

A runner may drive a saga only while it holds the saga's lease. Every
transition it commits renews the lease; while a handler runs, a heartbeat
thread renews all of the engine's leases with one statement (``extend``), so a
long step keeps its saga however many the engine drives. A lease the heartbeat
cannot renew — another runner claimed the saga after the lease expired, or the
engine could not reach the database in time — is *lost*: the runner starts no
new attempt on that saga, an async handler in flight is cancelled, and any
write it still tries is refused by the lease epoch in the store.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

from statesaga.store import SqlStore

log = logging.getLogger("statesaga")


class LeaseLost(BaseException):
    """This runner no longer holds the saga: stop driving it, write nothing.

    A ``BaseException`` so that no handler error path treats it as a failure."""


class Leases:
    """The leases of one owner.

    Args:
        store: where leases are renewed.
        owner: the owner's id, as written on the saga rows it holds.
        length: seconds a lease lasts from its last renewal.
        heartbeat: seconds between renewals (default: a third of ``length``).
        clock: the time source.
    """

    def __init__(
        self,
        store: SqlStore,
        owner: str,
        length: float,
        clock: Callable[[], float],
        heartbeat: float | None = None,
    ) -> None:
        if length <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {length!r}")
        self.store = store
        self.owner = owner
        self.length = length
        self.heartbeat = heartbeat if heartbeat is not None else length / 3
        self.clock = clock
        self._until: dict[str, float] = {}  # held saga -> when its lease runs out, as we know it
        self._lost: set[str] = set()
        self._requests: dict[str, str] = {}  # held saga -> an operator's request on it
        self._handlers: dict[str, concurrent.futures.Future[object]] = {}
        self._lock = threading.Lock()
        #: Whether this owner ever held a lease (else it has none to let go of).
        self.ever_held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def until(self) -> float:
        """The expiry of a lease taken or renewed now."""
        return self.clock() + self.length

    def hold(self, saga_id: str, until: float) -> None:
        """Record that this owner holds ``saga_id`` until ``until`` (it was just
        claimed, created or renewed by a transition)."""
        with self._lock:
            self._until[saga_id] = until
            self._lost.discard(saga_id)
            self.ever_held = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name=f"statesaga-heartbeat-{self.owner}", daemon=True
                )
                self._thread.start()

    def requested(self, saga_id: str) -> str | None:
        """The operator's request on held ``saga_id`` (``cancel``, ``pause``), as the
        claim or the last heartbeat read it; ``None``: none."""
        return self._requests.get(saga_id)

    def note_request(self, saga_id: str, request: str | None) -> None:
        """Remember (or, ``None``, forget) the request on ``saga_id``."""
        with self._lock:
            if request is None:
                self._requests.pop(saga_id, None)
            else:
                self._requests[saga_id] = request

    def drop(self, saga_id: str) -> None:
        """Forget ``saga_id``: its saga finished, was parked or let go."""
        with self._lock:
            self._requests.pop(saga_id, None)
            self._until.pop(saga_id, None)
            self._lost.discard(saga_id)
            self._handlers.pop(saga_id, None)

    def valid(self, saga_id: str) -> bool:
        """Whether the lease on ``saga_id`` is held and has not run out."""
        # No lock: each read is atomic, and a heartbeat that loses the lease just
        # after this looks is the same race with or without one (the epoch fences it).
        until = self._until.get(saga_id)
        return until is not None and saga_id not in self._lost and until > self.clock()

    def held(self) -> list[str]:
        """The sagas this owner holds now."""
        with self._lock:
            return list(self._until)

    def guard(self, saga_id: str, future: concurrent.futures.Future[object] | None) -> None:
        """Cancel ``future`` (an async handler in flight) if the lease is lost;
        ``None`` when it is done."""
        with self._lock:
            if future is None:
                self._handlers.pop(saga_id, None)
            else:
                self._handlers[saga_id] = future

    def lose(self, saga_ids: set[str], why: str) -> None:
        """Mark leases lost: no new attempt starts on them; async handlers in flight
        are cancelled."""
        with self._lock:
            lost = saga_ids & set(self._until)
            self._lost |= lost
            futures = [self._handlers.pop(s) for s in lost if s in self._handlers]
        for saga_id in sorted(lost):
            log.warning("statesaga: lease on saga %s lost (%s); this runner stops it", saga_id, why)
        for future in futures:
            future.cancel()

    def renew(self) -> None:
        """Renew every lease this owner holds, now (what the heartbeat does)."""
        with self._lock:
            mine = set(self._until)
        if not mine:
            return
        until = self.until()
        found = self.store.extend(self.owner, until)
        held = set(found)
        with self._lock:
            for saga_id in mine & held:
                if saga_id in self._until:
                    self._until[saga_id] = until
                request = found[saga_id]
                if request is not None:
                    self._requests[saga_id] = request
        self.lose(mine - held, "another runner holds it now")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self.renew()
            except Exception as exc:  # the database is unreachable: leases run out locally
                log.warning("statesaga: lease heartbeat failed: %s", exc)

    def close(self) -> None:
        """Stop the heartbeat."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
