"""Signals: events sent to a waiting saga, kept until its wait consumes them.

``send`` stores an event in the transaction that accepts it and, when a saga
is waiting for it now, makes that saga due (and announces it on PostgreSQL);
an event with an ``event_id`` already stored for the same event is dropped.
A wait step ``take``s the oldest matching event in the transaction that
records the step's completion, so an event is consumed exactly once.

Sending and parking a wait are serialized, so a wake-up is never lost between
a runner finding no event and parking the saga: on SQLite every write holds the
database's write lock; on PostgreSQL both take the same transaction-scoped
advisory lock on (event, saga or key) before they look.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from statesaga.store._base import StoreBase
from statesaga.store._claims import CHANNEL
from statesaga.store.schema import sagas, signals


@attrs.frozen
class SignalRow:
    """A stored signal."""

    position: int
    event_id: str
    event: str
    saga_id: str | None
    key: str | None
    payload: str
    received_at: float
    consumed_by: str | None
    consumed_at: float | None


_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")


def _lock(conn: Connection, event: str, target: str) -> None:
    """Serialize senders and waiters of one (event, saga or key) on PostgreSQL."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"{event}\0{target}".encode())
        conn.execute(_LOCK, {"k": key})


def _oldest(by_key: bool) -> sa.Select[Any]:
    """The oldest unconsumed signal of an event for a saga (or its key): the
    statement a wait step runs on every attempt, built once, values bound."""
    mine = signals.c.saga_id == sa.bindparam("s_saga_id", type_=sa.String)
    if by_key:
        mine = sa.or_(mine, signals.c.key == sa.bindparam("s_key", type_=sa.String))
    return (
        sa.select(*signals.c)
        .where(signals.c.event == sa.bindparam("s_event", type_=sa.String))
        .where(signals.c.consumed_at.is_(None), mine)
        .order_by(signals.c.position)
        .limit(1)
    )


_OLDEST = {by_key: _oldest(by_key) for by_key in (False, True)}
_CONSUME = (
    signals.update()
    .where(signals.c.position == sa.bindparam("s_position"))
    .values(consumed_by=sa.bindparam("s_by"), consumed_at=sa.bindparam("s_at"))
)


class Signals(StoreBase):
    """Stores signals, wakes the sagas waiting for them, hands them to waits."""

    def send(
        self,
        event: str,
        event_id: str,
        payload: str,
        now: float,
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> tuple[bool, list[str]]:
        """Store a signal for ``saga_id`` (or for whichever saga waits on ``key``)
        and wake the saga waiting for it now, if any.

        Returns:
            Whether it was stored (``False``: a signal with this event and id was
            already), and the sagas woken.
        """
        with self._writing() as conn:
            _lock(conn, event, saga_id if saga_id is not None else f"key:{key}")
            seen = conn.execute(
                sa.select(signals.c.position).where(
                    signals.c.event == event, signals.c.event_id == event_id
                )
            ).first()
            if seen is not None:
                return False, []
            conn.execute(
                signals.insert().values(
                    event_id=event_id,
                    event=event,
                    saga_id=saga_id,
                    key=key,
                    payload=payload,
                    received_at=now,
                )
            )
            which = (
                sagas.c.saga_id == saga_id if saga_id is not None else sagas.c.waiting_key == key
            )
            woken = [
                r[0]
                for r in conn.execute(
                    sagas.update()
                    .where(sagas.c.waiting_for == event, which)
                    .values(due_at=now)
                    .returning(sagas.c.saga_id)
                )
            ]
            if woken and self.dialect == "postgresql":
                conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            return True, woken

    @staticmethod
    def take(
        conn: Connection, event: str, saga_id: str, key: str | None, now: float
    ) -> SignalRow | None:
        """In the caller's transaction: the oldest signal for ``event`` sent to
        ``saga_id`` or to ``key``, marked consumed by ``saga_id``; ``None`` if none.
        Call it before parking the saga (the same lock serializes ``send``)."""
        _lock(conn, event, saga_id)
        if key is not None:
            _lock(conn, event, f"key:{key}")
        params = {"s_saga_id": saga_id, "s_key": key, "s_event": event}
        found = conn.execute(_OLDEST[key is not None], params).first()
        if found is None:
            return None
        conn.execute(_CONSUME, {"s_position": found.position, "s_by": saga_id, "s_at": now})
        return attrs.evolve(SignalRow(*found), consumed_by=saga_id, consumed_at=now)

    def pending(self, *, older_than: float | None = None) -> Sequence[SignalRow]:
        """Signals no wait has consumed (received before ``older_than``), oldest first."""
        q = sa.select(*signals.c).where(signals.c.consumed_at.is_(None))
        if older_than is not None:
            q = q.where(signals.c.received_at < older_than)
        with self._reading() as conn:
            return [SignalRow(*r) for r in conn.execute(q.order_by(signals.c.position))]

    def prune(self, older_than: float) -> Sequence[SignalRow]:
        """Delete the signals received before ``older_than`` that no wait consumed,
        and every consumed one older than that; return the unconsumed ones deleted."""
        with self._writing() as conn:
            dropped = [
                SignalRow(*r)
                for r in conn.execute(
                    sa.select(*signals.c).where(
                        signals.c.consumed_at.is_(None), signals.c.received_at < older_than
                    )
                )
            ]
            conn.execute(signals.delete().where(signals.c.received_at < older_than))
            return dropped
