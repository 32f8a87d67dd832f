"""The database schema, as SQLAlchemy Core tables.

``statesaga_sagas`` holds one row per saga (its current FSM state and status);
``statesaga_log`` is the append-only saga log, keyed by ``(saga_id, seq)``;
``statesaga_schema`` records each schema version applied, so an upgrade knows
what it starts from (``statesaga.store.migrations``). Times are UNIX seconds
(floats), the same on every backend.

A saga at a wait step names the event it waits for (``waiting_for``), its
correlation key (``waiting_key``) and when it gives up (``wait_until``);
``statesaga_signals`` holds every event sent to a saga or to a key, kept until
the wait it is for consumes it (``store._signals`` reads and writes it).

For choreography (``statesaga.choreography``), ``statesaga_outbox`` holds the
events published in an application's transactions until a relay has handed
them to the broker, and ``statesaga_inbox`` the ids of the events each
consumer has processed (``store._outbox`` reads and writes both). The embedded
broker (``statesaga.choreography.sql``) keeps its queues beside them:
``statesaga_bindings`` says which events each queue receives, and
``statesaga_deliveries`` holds each queue's deliveries until they are
acknowledged, or marks them dead-lettered (``store._deliveries``).

A saga is *owned* by at most one runner at a time: ``owner`` names it,
``lease_until`` says until when, and ``lease_epoch`` (the fencing token) grows
with every claim, so a runner whose lease was taken over writes nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 7

#: Statuses of sagas that still have work to do; ``recover`` reads them through a partial index.
INCOMPLETE = ("started", "compensating")

metadata = sa.MetaData()


def _partial(name: str, *columns: sa.Column[Any], where: sa.ColumnElement[bool]) -> sa.Index:
    """An index over the rows ``where`` holds, on both backends."""
    return sa.Index(name, *columns, sqlite_where=where, postgresql_where=where)


def _position() -> sa.Column[int]:
    """A table's own order of insertion: never reused (a late ack or consumption
    must not hit another row)."""
    return sa.Column(
        "position",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


sagas = sa.Table(
    "statesaga_sagas",
    metadata,
    sa.Column("saga_id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("state", sa.String(200), nullable=False),
    # Attempt number of the step/compensation in ``state``: 0 = not yet tried.
    sa.Column("attempt", sa.Integer, nullable=False),
    # Number of log entries written; every update is fenced on it.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    # When the next attempt is due, for a step waiting on its retry delay.
    sa.Column("due_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # The runner driving it now, until when, and the claim count that fences its writes.
    sa.Column("owner", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"),
    # At a wait step: the event, its correlation key, and when the wait gives up.
    sa.Column("waiting_for", sa.String(200)),
    sa.Column("waiting_key", sa.String(200)),
    sa.Column("wait_until", sa.Float),
    # An operator's request the runner carries out (cancel, pause), or the saga is
    # paused ('paused'), with who asked and why.
    sa.Column("request", sa.String(32)),
    sa.Column("request_by", sa.String(200)),
    sa.Column("request_reason", sa.Text),
)

_partial(
    "statesaga_sagas_incomplete",
    sagas.c.status,
    sagas.c.due_at,
    where=sagas.c.status.in_(INCOMPLETE),
)
sa.Index("statesaga_sagas_name", sagas.c.name, sagas.c.created_at)
# What a claim reads (``store/_claims.py``), in two parts so that sagas parked at a
# wait step, however many, cost a claim nothing until they are due: unfinished
# sagas not at a wait, oldest first; parked sagas by when they are due (signalled
# or given up).
_partial(
    "statesaga_sagas_ready",
    sagas.c.created_at,
    where=sa.and_(sagas.c.status.in_(INCOMPLETE), sagas.c.waiting_for.is_(None)),
)
_partial(
    "statesaga_sagas_wakeup",
    sagas.c.due_at,
    where=sagas.c.waiting_for.is_not(None),
)
_partial(
    "statesaga_sagas_waiting",
    sagas.c.waiting_for,
    sagas.c.waiting_key,
    where=sagas.c.waiting_for.is_not(None),
)

signals = sa.Table(
    "statesaga_signals",
    metadata,
    _position(),
    # The sender's id for it: a second signal with the same event and id is dropped.
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("event", sa.String(200), nullable=False),
    # Addressed to one saga, or to whichever saga waits on the key.
    sa.Column("saga_id", sa.String(200)),
    sa.Column("key", sa.String(200)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    # The saga whose wait consumed it, and when.
    sa.Column("consumed_by", sa.String(200)),
    sa.Column("consumed_at", sa.Float),
    sa.UniqueConstraint("event", "event_id", name="statesaga_signals_once"),
)

_partial(
    "statesaga_signals_pending",
    signals.c.event,
    signals.c.saga_id,
    signals.c.key,
    signals.c.position,
    where=signals.c.consumed_at.is_(None),
)

log = sa.Table(
    "statesaga_log",
    metadata,
    sa.Column("saga_id", sa.String(200), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)

schema_version = sa.Table(
    "statesaga_schema",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

outbox = sa.Table(
    "statesaga_outbox",
    metadata,
    # The order events were written in; per key, the order they are published in.
    _position(),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    # Events of one key are published one after another, in position order.
    sa.Column("key", sa.String(200)),
    sa.Column("payload", sa.Text, nullable=False),
    # The participant that published it, and the event whose handling did.
    sa.Column("source", sa.String(200)),
    sa.Column("cause", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("published_at", sa.Float),
    # The relay sending it now, until when, and the claim count that fences its writes.
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claim_until", sa.Float),
    sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
)

_partial(
    "statesaga_outbox_unpublished",
    outbox.c.position,
    where=outbox.c.published_at.is_(None),
)
_partial(
    "statesaga_outbox_key",
    outbox.c.key,
    outbox.c.position,
    where=outbox.c.published_at.is_(None),
)

inbox = sa.Table(
    "statesaga_inbox",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("processed_at", sa.Float, nullable=False),
)

# The embedded broker (``statesaga.choreography.sql``; ``store._deliveries`` reads and
# writes both): which events each queue receives, and each queue's deliveries.
bindings = sa.Table(
    "statesaga_bindings",
    metadata,
    sa.Column("queue", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
)

sa.Index("statesaga_bindings_name", bindings.c.name)

deliveries = sa.Table(
    "statesaga_deliveries",
    metadata,
    # The order deliveries were sent in; never reused (a late ack must not hit another).
    _position(),
    sa.Column("queue", sa.String(200), nullable=False),
    # The event, as the outbox held it (``origin``: its outbox position).
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key", sa.String(200)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("source", sa.String(200)),
    sa.Column("cause", sa.String(64)),
    sa.Column("origin", sa.BigInteger),
    sa.Column("sent_at", sa.Float, nullable=False),
    # Times handed to a consumer; more than once: a redelivery.
    sa.Column("handed", sa.Integer, nullable=False, server_default="0"),
    # The consumer holding it, and until when.
    sa.Column("held_by", sa.String(64)),
    sa.Column("hold_until", sa.Float),
    # Set aside for good (kept for an operator).
    sa.Column("dead_at", sa.Float),
    sqlite_autoincrement=True,
)

_partial(
    "statesaga_deliveries_waiting",
    deliveries.c.queue,
    deliveries.c.position,
    where=deliveries.c.dead_at.is_(None),
)
_partial(
    "statesaga_deliveries_key",
    deliveries.c.queue,
    deliveries.c.key,
    deliveries.c.position,
    where=deliveries.c.dead_at.is_(None),
)
