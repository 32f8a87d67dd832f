"""The choreography's SQL: the transactional outbox and the consumers' inbox.

``append`` writes events on the caller's connection, inside the transaction
that changes the state they announce: they commit with it or not at all.

A relay ``claim``s unpublished events with a lease, as workers claim sagas:
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that relays never wait for each
other; on SQLite the claim is one ``BEGIN IMMEDIATE`` transaction, and writers
take turns. Each claim raises the row's ``claims`` count, which fences the
``published`` mark: a relay whose lease ran out (and whose event another relay
took) marks nothing.

Order per key: a relay takes only the *first* unpublished event of each key
(by position), so the next event of a key is claimed only once the one before
it is marked published, that is, after the broker confirmed it. Events of
different keys go out in parallel; one key's go out one after another. (A
late duplicate of an event whose lease expired may still reach the broker
after its successor; consumers' inboxes drop it.)

The inbox is one row per (consumer, event id), inserted ``ON CONFLICT DO
NOTHING`` in the transaction of the consumer's effects: a duplicate inserts
nothing, and its effects are skipped.

A consumer that gives up on an event (its handler failed ``max_attempts``
times) records that too, as an inbox row of the consumer named
``PARTICIPANT!dead`` (``!`` is in no participant's name): the event stays
unprocessed for the participant itself, so an operator who sends it again
after a fix has it handled, and the overlay of a key's events
(``statesaga.diagrams.choreography``) can say where it was dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga.store._tables import TableStore
from statesaga.store.schema import inbox, outbox

#: The PostgreSQL channel on which a commit that wrote outbox rows wakes the relays.
OUTBOX_CHANNEL = "statesaga_outbox"
#: Appended to a participant's name, the inbox "consumer" of the events it dead-lettered.
DEAD = "!dead"


class NewEvent(TypedDict):
    """An outbox row to insert."""

    event_id: str
    name: str
    key: str | None
    payload: str
    source: str | None
    cause: str | None
    created_at: float


@attrs.frozen
class OutboxRow:
    """An outbox row as stored."""

    position: int
    event_id: str
    name: str
    key: str | None
    payload: str
    source: str | None
    cause: str | None
    created_at: float
    published_at: float | None
    claimed_by: str | None
    claim_until: float | None
    claims: int


@attrs.frozen
class InboxRow:
    """An inbox row as stored: ``consumer`` processed (or, if ``dead``,
    dead-lettered) the event ``event_id`` at ``at``."""

    consumer: str
    event_id: str
    name: str
    at: float
    dead: bool


_insert = outbox.insert()


def append(conn: Connection, events: Sequence[NewEvent]) -> None:
    """Write ``events`` to the outbox in ``conn``'s transaction (on PostgreSQL,
    relays listening are woken when it commits, and not if it rolls back)."""
    if not events:
        return
    conn.execute(_insert, list(events))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {OUTBOX_CHANNEL}")


class OutboxStore(TableStore):
    """Reads and writes the outbox and the inbox.

    Args:
        engine: an SQLAlchemy engine (see ``make_engine``).
    """

    channel = OUTBOX_CHANNEL

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # RETURNING says whether the row went in (rowcount is -1 with some drivers).
        self._mark_processed = (
            self._insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id)
        )

    # -- writes on the caller's connection -----------------------------------

    def append(self, conn: Connection, events: Sequence[NewEvent]) -> None:
        """``append`` (the module's function)."""
        append(conn, events)

    def mark_processed(
        self, conn: Connection, consumer: str, event_id: str, name: str, now: float
    ) -> bool:
        """Record in ``conn``'s transaction that ``consumer`` processed ``event_id``.

        Returns:
            ``False`` if it already had (a duplicate: nothing was written). A
            concurrent transaction recording the same event makes this one wait
            for its outcome.
        """
        done = conn.execute(
            self._mark_processed,
            {"consumer": consumer, "event_id": event_id, "name": name, "processed_at": now},
        )
        return done.first() is not None

    def mark_dead(self, consumer: str, event_id: str, name: str, now: float) -> None:
        """Record, in a transaction of its own, that ``consumer`` dead-lettered
        ``event_id`` (gave up on it); a second record of it is dropped."""
        with self.engine.begin() as conn:
            conn.execute(
                self._mark_processed,
                {
                    "consumer": consumer + DEAD,
                    "event_id": event_id,
                    "name": name,
                    "processed_at": now,
                },
            )

    # -- the relay's claim ----------------------------------------------------

    def claim(self, owner: str, until: float, now: float, limit: int) -> list[OutboxRow]:
        """Take up to ``limit`` unpublished events, oldest first, each the first
        unpublished event of its key, whose lease is free or expired.

        Returns:
            The claimed rows, by position.
        """
        o = outbox
        earlier = outbox.alias("earlier")
        before = (
            sa.select(earlier.c.position)
            .where(
                earlier.c.key == o.c.key,
                earlier.c.published_at.is_(None),
                earlier.c.position < o.c.position,
            )
            .exists()
        )
        pick = (
            sa.select(o.c.position)
            .where(
                o.c.published_at.is_(None),
                sa.or_(o.c.claim_until.is_(None), o.c.claim_until < now),
                sa.not_(before),
            )
            .order_by(o.c.position)
            .limit(limit)
            .with_for_update(skip_locked=True, of=o)
        )
        take = (
            o.update()
            .where(o.c.position.in_(pick.scalar_subquery()))
            .values(claimed_by=owner, claim_until=until, claims=o.c.claims + 1)
            .returning(*o.c)
        )
        with self.engine.begin() as conn:
            rows = [OutboxRow(*r) for r in conn.execute(take)]
        return sorted(rows, key=lambda r: r.position)

    def published(self, owner: str, rows: Sequence[OutboxRow], now: float) -> int:
        """Mark ``rows`` published, those that ``owner`` still holds by the claim it
        made (fenced on the claim count).

        Returns:
            How many were marked.
        """
        if not rows:
            return 0
        mark = (
            outbox.update()
            .where(
                outbox.c.claimed_by == owner,
                sa.tuple_(outbox.c.position, outbox.c.claims).in_(
                    [(r.position, r.claims) for r in rows]
                ),
            )
            .values(published_at=now, claimed_by=None, claim_until=None)
        )
        with self.engine.begin() as conn:
            return int(conn.execute(mark).rowcount)

    def release(self, owner: str, rows: Sequence[OutboxRow]) -> None:
        """Let go of ``rows`` (not sent): any relay may claim them at once."""
        if not rows:
            return
        free = (
            outbox.update()
            .where(
                outbox.c.claimed_by == owner,
                outbox.c.position.in_([r.position for r in rows]),
            )
            .values(claimed_by=None, claim_until=None)
        )
        with self.engine.begin() as conn:
            conn.execute(free)

    # -- reads ----------------------------------------------------------------

    def events(self, *, key: str | None = None, pending: bool = False) -> list[OutboxRow]:
        """Outbox rows by position: all, those of ``key``, or only unpublished ones."""
        q = sa.select(outbox).order_by(outbox.c.position)
        if key is not None:
            q = q.where(outbox.c.key == key)
        if pending:
            q = q.where(outbox.c.published_at.is_(None))
        with self._reading() as conn:
            return [OutboxRow(*r) for r in conn.execute(q)]

    def pending(self) -> int:
        """How many events are not published yet."""
        q = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        with self._reading() as conn:
            return int(conn.execute(q).scalar_one())

    def processed(self, consumer: str) -> list[str]:
        """The ids of the events ``consumer`` has processed, sorted."""
        q = sa.select(inbox.c.event_id).where(inbox.c.consumer == consumer)
        with self._reading() as conn:
            return sorted(conn.execute(q).scalars())

    def handled(self, event_ids: Sequence[str]) -> list[InboxRow]:
        """The inbox rows of ``event_ids``: who processed or dead-lettered each, and
        when; by time, then consumer."""
        if not event_ids:
            return []
        q = (
            sa.select(inbox)
            .where(inbox.c.event_id.in_(list(event_ids)))
            .order_by(inbox.c.processed_at, inbox.c.consumer)
        )
        with self._reading() as conn:
            return [
                InboxRow(
                    r.consumer.removesuffix(DEAD),
                    r.event_id,
                    r.name,
                    r.processed_at,
                    r.consumer.endswith(DEAD),
                )
                for r in conn.execute(q)
            ]

    def prune(self, before: float) -> int:
        """Delete events published before ``before``; return how many (the inbox is
        kept: it is what drops a late duplicate)."""
        q = outbox.delete().where(
            outbox.c.published_at.is_not(None), outbox.c.published_at < before
        )
        with self.engine.begin() as conn:
            return int(conn.execute(q).rowcount)
