"""The embedded broker's SQL: queues of deliveries in statesaga's own database.

``statesaga.choreography.sql.SqlBroker`` carries events between participants
through two tables beside the outbox, so that a deployment with nothing but
its database loses no event: what the relay marks published is already
committed in each subscriber's queue.

- ``statesaga_bindings``: which events each queue receives, one row per
  (queue, event name), written by ``bind`` and never removed by it (as a
  broker's bindings outlive the consumer that declared them).
- ``statesaga_deliveries``: one row per (queue, event sent), inserted by
  ``send`` for every queue bound to the event's name, all of a batch in one
  transaction. Events sent before a queue was bound are not in it.

A consumer ``take``s the first delivery of its queue (by position, the order
sent) whose hold is free or expired and that is the first not dead-lettered
delivery of its key in that queue: the next delivery of a key is handed out
only once the one before it is acknowledged (deleted) or dead-lettered, so one
key's deliveries are handled in order even by several consumers of one queue,
and two consumers never hold one delivery at once while its hold lasts. The
take is ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and one ``BEGIN IMMEDIATE``
transaction on SQLite (after a read-only look, so that idle consumers do not
queue for the write lock); it counts the hand-outs (``handed``), which says
whether a delivery is a redelivery.

A consumer that dies holding a delivery stalls that key in that queue until the
hold runs out; then another consumer takes it again (a redelivery, dropped by
its inbox if the effects had committed). ``release`` hands back what a consumer
holds; ``dead`` sets a delivery aside for good (kept, with ``dead_at``, for an
operator); ``ack`` deletes it. Positions are never reused (``AUTOINCREMENT`` on
SQLite, a sequence on PostgreSQL), so a late ``ack`` cannot delete another
delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from statesaga.store._tables import TableStore
from statesaga.store.schema import bindings, deliveries

#: The PostgreSQL channel on which a commit that queued deliveries wakes the consumers.
DELIVERIES_CHANNEL = "statesaga_deliveries"


class Outgoing(TypedDict):
    """An event to queue, as ``send`` takes it."""

    event_id: str
    name: str
    key: str | None
    payload: str
    source: str | None
    cause: str | None
    origin: int | None


@attrs.frozen
class DeliveryRow:
    """A delivery as stored.

    Attributes:
        position: its place among all deliveries (the order sent).
        queue: the queue it is in.
        origin: the event's position in the outbox, if it came from there.
        handed: how many times it was handed to a consumer (counting this one
            for a row returned by ``take``).
        held_by: the consumer holding it, until ``hold_until``.
        dead_at: when it was dead-lettered (``None``: it was not).
    """

    position: int
    queue: str
    event_id: str
    name: str
    key: str | None
    payload: str
    source: str | None
    cause: str | None
    origin: int | None
    sent_at: float
    handed: int
    held_by: str | None
    hold_until: float | None
    dead_at: float | None


class DeliveryStore(TableStore):
    """Reads and writes the embedded broker's bindings and deliveries.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
    """

    channel = DELIVERIES_CHANNEL

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._bind = self._insert(bindings).on_conflict_do_nothing()
        self._take = _take_statement()

    # -- bindings and sending -------------------------------------------------

    def bind(self, queue: str, names: Iterable[str]) -> None:
        """Bind ``queue`` to the events ``names`` (those it had stay)."""
        wanted = [{"queue": queue, "name": n} for n in dict.fromkeys(names)]
        if not wanted:
            return
        with self.engine.begin() as conn:
            conn.execute(self._bind, wanted)

    def send(self, events: Sequence[Outgoing], now: float) -> int:
        """Queue each event for every queue bound to its name, all in one
        transaction, in the order given; return once it has committed.

        Returns:
            How many deliveries were queued (an event no queue is bound to
            queues none).
        """
        if not events:
            return 0
        names = sorted({e["name"] for e in events})
        with self.engine.begin() as conn:
            bound: dict[str, list[str]] = {}
            q = (
                sa.select(bindings.c.name, bindings.c.queue)
                .where(bindings.c.name.in_(names))
                .order_by(bindings.c.queue)
            )
            for name, queue in conn.execute(q):
                bound.setdefault(name, []).append(queue)
            rows = [
                {**e, "queue": queue, "sent_at": now}
                for e in events
                for queue in bound.get(e["name"], ())
            ]
            if rows:
                conn.execute(deliveries.insert(), rows)
                if self.dialect == "postgresql":
                    conn.exec_driver_sql(f"NOTIFY {DELIVERIES_CHANNEL}")
        return len(rows)

    # -- a consumer's side ------------------------------------------------------

    def take(self, queue: str, owner: str, now: float, until: float) -> DeliveryRow | None:
        """Hold the next delivery of ``queue`` for ``owner`` until ``until``: the
        first by position whose hold is free or expired and which is the first
        delivery of its key not dead-lettered. ``None``: there is none now."""
        d = deliveries
        ready = (
            sa.select(d.c.position)
            .where(
                d.c.queue == queue,
                d.c.dead_at.is_(None),
                sa.or_(d.c.hold_until.is_(None), d.c.hold_until < now),
            )
            .limit(1)
        )
        # A look without the write lock first: an idle consumer polls cheaply.
        with self._reading() as conn:
            if conn.execute(ready).first() is None:
                return None
        params = {"b_queue": queue, "b_owner": owner, "b_now": now, "b_until": until}
        with self.engine.begin() as conn:
            row = conn.execute(self._take, params).first()
        return None if row is None else DeliveryRow(*row)

    def ack(self, position: int) -> None:
        """The delivery at ``position`` is done with: delete it."""
        with self.engine.begin() as conn:
            conn.execute(deliveries.delete().where(deliveries.c.position == position))

    def release(self, queue: str, owner: str) -> int:
        """Hand back every delivery of ``queue`` that ``owner`` holds; return how many."""
        d = deliveries
        free = (
            d.update()
            .where(d.c.queue == queue, d.c.held_by == owner, d.c.dead_at.is_(None))
            .values(held_by=None, hold_until=None)
        )
        with self.engine.begin() as conn:
            return int(conn.execute(free).rowcount)

    def dead(self, position: int, now: float) -> None:
        """Set the delivery at ``position`` aside for good (an operator looks at it)."""
        d = deliveries
        aside = (
            d.update()
            .where(d.c.position == position)
            .values(dead_at=now, held_by=None, hold_until=None)
        )
        with self.engine.begin() as conn:
            conn.execute(aside)

    # -- reads ----------------------------------------------------------------

    def deliveries(self, queue: str, *, dead: bool | None = None) -> list[DeliveryRow]:
        """The deliveries of ``queue`` by position: all of them, or only those
        dead-lettered (``dead=True``) or not (``dead=False``)."""
        d = deliveries
        q = sa.select(d).where(d.c.queue == queue).order_by(d.c.position)
        if dead is not None:
            q = q.where(d.c.dead_at.is_not(None) if dead else d.c.dead_at.is_(None))
        with self._reading() as conn:
            return [DeliveryRow(*r) for r in conn.execute(q)]

    def depth(self, queue: str) -> int:
        """How many deliveries of ``queue`` wait (held ones too; not dead letters)."""
        d = deliveries
        q = (
            sa.select(sa.func.count())
            .select_from(d)
            .where(d.c.queue == queue, d.c.dead_at.is_(None))
        )
        with self._reading() as conn:
            return int(conn.execute(q).scalar_one())

    def bound(self, queue: str) -> list[str]:
        """The events ``queue`` is bound to, sorted."""
        q = sa.select(bindings.c.name).where(bindings.c.queue == queue).order_by(bindings.c.name)
        with self._reading() as conn:
            return list(conn.execute(q).scalars())


def _take_statement() -> Any:
    """``UPDATE ... RETURNING`` the delivery ``take`` hands out (bound parameters:
    ``b_queue``, ``b_owner``, ``b_now``, ``b_until``)."""
    d = deliveries
    earlier = deliveries.alias("earlier")
    before = (
        sa.select(earlier.c.position)
        .where(
            earlier.c.queue == d.c.queue,
            earlier.c.key == d.c.key,
            earlier.c.dead_at.is_(None),
            earlier.c.position < d.c.position,
        )
        .exists()
    )
    now = sa.bindparam("b_now", type_=sa.Float)
    pick = (
        sa.select(d.c.position)
        .where(
            d.c.queue == sa.bindparam("b_queue"),
            d.c.dead_at.is_(None),
            sa.or_(d.c.hold_until.is_(None), d.c.hold_until < now),
            sa.not_(before),
        )
        .order_by(d.c.position)
        .limit(1)
        .with_for_update(skip_locked=True, of=d)
    )
    return (
        d.update()
        .where(d.c.position.in_(pick.scalar_subquery()))
        .values(
            held_by=sa.bindparam("b_owner"),
            hold_until=sa.bindparam("b_until", type_=sa.Float),
            handed=d.c.handed + 1,
        )
        .returning(*d.c)
    )
