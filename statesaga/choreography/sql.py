"""The embedded broker: queues in statesaga's own database, nothing else to run.

``SqlBroker`` keeps bindings and per-queue deliveries in two tables beside the
outbox (``statesaga_bindings``, ``statesaga_deliveries``; the SQL is in
``statesaga.store._deliveries``), on SQLite or PostgreSQL, shared by every
process that opens the database. It is the broker for a deployment with only
its database, and what ``statesaga relay`` uses unless given a broker URL.

Why it loses nothing: ``send`` inserts one delivery per bound queue per event,
the whole batch in one transaction, and returns only once that has committed;
only then does the relay mark the events published. A relay that dies between
the two sends them again (a duplicate, which the consumer's inbox drops). A
delivery is deleted by ``ack``, which the consumer calls only after its effects
committed, so a consumer that dies before then finds it again.

How it hands out: ``get`` holds the first waiting delivery of the queue (in the
order sent) that is the first of its key, for ``lease`` seconds; the next
delivery of that key waits until this one is acknowledged or dead-lettered. So
one key's events are processed in the order sent even with several consumers
on one queue (they share out the keys), and no two consumers hold one delivery
at once. A consumer killed while holding a delivery stalls that key until the
hold runs out; another consumer then gets it again, ``redelivered``. A handler
that runs longer than ``lease`` may see its delivery handed to a second
consumer of the queue: the inbox still lets only one of them commit its
effects (the second waits for the first's transaction, then drops it), but set
``lease`` above your slowest handler.

As with a real broker, an event sent before any queue was bound to its name
reaches no queue: let each consumer ``subscribe()`` (declare its queue) before
events flow. Dead letters stay in the table, marked, until an operator deals
with them (``dead_letters``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from statesaga._errors import BrokerError
from statesaga.choreography._broker import Delivery, Subscription
from statesaga.choreography._inbox import engine_of
from statesaga.choreography._participant import Event
from statesaga.store._deliveries import DeliveryRow, DeliveryStore, Outgoing
from statesaga.store._listen import Listener

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine

#: The first pause of a ``get`` that found nothing; pauses double up to ``poll``.
_FIRST_POLL = 0.01


class SqlBroker:
    """The broker in statesaga's database: durable queues, no server to run.

    Args:
        db: statesaga's database: a ``SagaEngine``, an SQLAlchemy ``Engine`` or
            a URL (the broker then opens, and ``close`` disposes of, an engine
            of its own).
        lease: seconds a consumer holds a delivery it was given; after that,
            another consumer of the queue may be given it.
        poll: the longest pause between looks while ``get`` waits (PostgreSQL
            also wakes it when deliveries are committed).
        clock: the time source, in UNIX seconds, for holds.

    Raises:
        ValueError: ``lease`` or ``poll`` is not positive.
    """

    def __init__(
        self,
        db: SagaEngine | Engine | str,
        *,
        lease: float = 60.0,
        poll: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        if poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        self._owns_engine = isinstance(db, str)
        self.store = DeliveryStore(engine_of(db))
        self.store.ensure_schema()
        self.lease = lease
        self.poll = poll
        self._clock = clock

    def __repr__(self) -> str:
        return f"<SqlBroker {self.shown}>"

    @property
    def shown(self) -> str:
        """The database it keeps its queues in, the password hidden."""
        return self.store.engine.url.render_as_string(hide_password=True)

    def send(self, events: Sequence[Event]) -> int:
        """Queue ``events`` for every queue bound to each one's name, in one
        transaction; return once it committed.

        Returns:
            ``len(events)``: all of them are confirmed, or none.

        Raises:
            BrokerError: the database refused or could not be reached; nothing
                was queued.
        """
        outgoing = [
            Outgoing(
                event_id=e.id,
                name=e.name,
                key=e.key,
                payload=json.dumps(e.payload, separators=(",", ":")),
                source=e.source,
                cause=e.cause,
                origin=e.position,
            )
            for e in events
        ]
        try:
            self.store.send(outgoing, self._clock())
        except sa.exc.SQLAlchemyError as exc:
            raise BrokerError(repr(self), f"queueing failed ({type(exc).__name__}: {exc})") from exc
        return len(events)

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        """Bind ``queue`` to ``events`` (its earlier bindings stay) and read it."""
        self.store.bind(queue, events)
        return _SqlSubscription(self, queue)

    def depth(self, queue: str) -> int:
        """How many deliveries wait in ``queue`` (those held by a consumer too)."""
        return self.store.depth(queue)

    def dead_letters(self, queue: str) -> list[Event]:
        """The events dead-lettered from ``queue``, in the order they were sent."""
        return [event_of(r) for r in self.store.deliveries(queue, dead=True)]

    def close(self) -> None:
        """Dispose of the engine, if the broker opened it from a URL."""
        if self._owns_engine:
            self.store.engine.dispose()


def event_of(row: DeliveryRow) -> Event:
    """The event a delivery row holds."""
    return Event(
        row.event_id,
        row.name,
        row.key,
        json.loads(row.payload),
        row.source,
        row.cause,
        row.origin,
    )


class _SqlSubscription:
    """One consumer's reading of a queue; its holds carry its own owner id."""

    def __init__(self, broker: SqlBroker, queue: str) -> None:
        self._broker = broker
        self._store = broker.store
        self._queue = queue
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._listener: Listener | None = None
        self._listening = False

    def __repr__(self) -> str:
        return f"<SqlBroker subscription {self.owner} to {self._queue!r}>"

    def get(self, wait: float) -> Delivery | None:
        deadline = time.monotonic() + max(wait, 0.0)
        pause = _FIRST_POLL
        while True:
            self._wake.clear()
            now = self._broker._clock()
            row = self._store.take(self._queue, self.owner, now, now + self._broker.lease)
            if row is not None:
                return Delivery(event_of(row), row.position, row.handed > 1)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._listening:
                self._listening = True
                self._listener = self._store.listen(self._wake.set)
            self._wake.wait(min(pause, left))
            pause = min(pause * 2, self._broker.poll)

    def ack(self, delivery: Delivery) -> None:
        self._store.ack(delivery.tag)

    def requeue(self) -> None:
        self._store.release(self._queue, self.owner)

    def dead_letter(self, delivery: Delivery) -> None:
        self._store.dead(delivery.tag, self._broker._clock())

    def close(self) -> None:
        listener, self._listener = self._listener, None
        self._listening = False
        if listener is not None:
            listener.close()
        self.requeue()
