"""Signals: how the outside world reaches a saga waiting at a wait step.

A signal is stored in the transaction that accepts it, so it is never lost: if
the saga waits for it now, it is woken (made due; on PostgreSQL workers hear it
at once); if the saga has not reached the wait yet, the signal is kept and its
wait consumes it when it does. A second signal with the same ``event_id`` is
dropped. A signal a saga will never consume — its definition waits for no such
event, or it is past that wait, or it has ended — is refused with the reason,
not stored to be silently lost. Signals sent to a correlation key are kept until
a saga waiting on that key consumes them; ``prune_signals`` reports and deletes
the ones no saga took within a retention period.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from statesaga import _codec as codec
from statesaga._errors import SagaNotFound, SerializationError, SignalRefused
from statesaga._registry import Registry
from statesaga._status import SagaStatus
from statesaga.store import SqlStore

if TYPE_CHECKING:
    from statesaga._worker import Crew


@attrs.frozen
class SignalReceipt:
    """What became of a signal.

    Attributes:
        event_id: its id (the caller's, or a fresh one).
        stored: ``False`` when a signal with this event and id was stored
            before (this one was dropped as a duplicate).
        woken: the sagas waiting for it now, woken by it; empty when it is kept
            for a saga that has not reached its wait yet.
    """

    event_id: str
    stored: bool
    woken: tuple[str, ...]


@attrs.frozen
class PendingSignal:
    """A stored signal no wait has consumed yet.

    Attributes:
        event: its event; event_id: its id.
        saga_id: the saga it was sent to, or ``None`` (sent to ``key``).
        key: the correlation key it was sent to, or ``None``.
        received_at: when it was stored.
    """

    event: str
    event_id: str
    saga_id: str | None
    key: str | None
    received_at: float


class Signalling:
    """The signal API of ``SagaEngine`` (its methods are the engine's)."""

    store: SqlStore
    _registry: Registry
    _clock: Callable[[], float]
    _crew: Crew

    def signal(
        self, saga_id: str, event: str, payload: Any = None, *, event_id: str | None = None
    ) -> SignalReceipt:
        """Send ``event`` (with ``payload``, JSON values) to the saga ``saga_id``.

        Durable and exactly-once in effect: stored before this returns; consumed
        by the saga's wait for ``event`` — now if it waits, else when it gets
        there; a repeat with the same ``event_id`` is dropped.

        Raises:
            SagaNotFound: no saga has that id.
            SignalRefused: the saga will never wait for ``event`` (its definition
                has no such wait, it is past it, or it has ended).
            SerializationError: ``payload`` cannot be stored as JSON.
        """
        self.store.require_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        if SagaStatus(row.status) is not SagaStatus.STARTED:
            raise SignalRefused(event, f"saga {saga_id!r} is {row.status}: it waits for nothing")
        defn = self._registry.matching(row)
        if defn is not None:
            waits = [s for s in defn.spec.steps if s.wait is not None and s.wait.event == event]
            if not waits:
                events = sorted({s.wait.event for s in defn.spec.steps if s.wait is not None})
                raise SignalRefused(
                    event,
                    f"saga {saga_id!r} ({defn.spec.key}) waits for no {event!r}; "
                    f"its waits: {', '.join(events) or 'none'}",
                )
            here = defn.spec.step(row.state).index
            if all(s.index < here for s in waits):
                raise SignalRefused(
                    event, f"saga {saga_id!r} is past its wait for {event!r} (at {row.state!r})"
                )
        return self._send(event, payload, event_id, saga_id=saga_id)

    async def asignal(
        self, saga_id: str, event: str, payload: Any = None, *, event_id: str | None = None
    ) -> SignalReceipt:
        """``signal`` for async applications (the commit runs in a thread)."""
        return await asyncio.to_thread(self.signal, saga_id, event, payload, event_id=event_id)

    def signal_key(
        self, event: str, key: str, payload: Any = None, *, event_id: str | None = None
    ) -> SignalReceipt:
        """Send ``event`` to whichever saga waits for it under correlation ``key``
        (a wait's ``key=``, computed from its input and earlier results), now or
        later: it is kept until such a wait consumes it.

        Raises:
            SignalRefused: no registered definition waits for ``event`` by key.
            SerializationError: ``payload`` cannot be stored as JSON.
        """
        self.store.require_schema()
        keyed = [
            s
            for d in self._registry.definitions()
            for s in d.spec.steps
            if s.wait is not None and s.wait.event == event and s.wait.key is not None
        ]
        if self._registry.names() and not keyed:
            raise SignalRefused(
                event, f"no registered saga waits for {event!r} by key ({self._registry})"
            )
        return self._send(event, payload, event_id, key=str(key))

    async def asignal_key(
        self, event: str, key: str, payload: Any = None, *, event_id: str | None = None
    ) -> SignalReceipt:
        """``signal_key`` for async applications (the commit runs in a thread)."""
        return await asyncio.to_thread(self.signal_key, event, key, payload, event_id=event_id)

    def pending_signals(self, *, older_than: float | None = None) -> list[PendingSignal]:
        """Signals no wait has consumed yet (received before ``older_than``)."""
        self.store.require_schema()
        return [_pending(r) for r in self.store.pending(older_than=older_than)]

    def prune_signals(self, older_than: float) -> list[PendingSignal]:
        """The retention policy: delete signals received before ``older_than`` (UNIX
        seconds); return those of them no wait ever consumed, to be reported."""
        self.store.require_schema()
        return [_pending(r) for r in self.store.prune(older_than)]

    def _send(
        self,
        event: str,
        payload: Any,
        event_id: str | None,
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> SignalReceipt:
        try:
            text = codec.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise SerializationError(event, saga_id, "signal", payload, str(exc)) from exc
        eid = event_id if event_id is not None else uuid.uuid4().hex
        stored, woken = self.store.send(event, eid, text, self._clock(), saga_id=saga_id, key=key)
        if woken:
            self._crew.wake()
        return SignalReceipt(eid, stored, tuple(woken))


def _pending(row: Any) -> PendingSignal:
    return PendingSignal(row.event, row.event_id, row.saga_id, row.key, row.received_at)
