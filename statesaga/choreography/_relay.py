"""The relay: hands the outbox's events to the broker, each key's in order.

Each turn claims a batch of unpublished events with a lease (at most the first
unpublished event of each key: see ``store._outbox``), sends them to the broker
in position order, waits for its confirmation, and marks what was confirmed
published, fenced by the claim. What the broker did not confirm is let go, to
be sent again. So every committed event reaches the broker at least once, an
event of a rolled-back transaction never does, and one key's events reach it
in the order they were written.

Several relays may run against one database (on PostgreSQL they claim with
``SKIP LOCKED`` and never wait for each other; on SQLite they take turns). A
relay that dies holding a claim stalls those events only until its lease runs
out; another relay then sends them (a duplicate, if the dead one had sent them:
consumers' inboxes drop it).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from statesaga._errors import BrokerError
from statesaga.choreography._broker import Broker
from statesaga.choreography._inbox import engine_of, event_of
from statesaga.choreography._loop import Loop, log
from statesaga.store._listen import Listener
from statesaga.store._outbox import OutboxStore

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine


class Relay(Loop):
    """Publishes the outbox to a broker.

    Run it beside ``engine.worker()``: ``run()`` (blocking; SIGTERM or SIGINT
    stop it), ``start()`` in a background thread, ``with relay:``, or
    ``drain()`` what is in the outbox now.

    Args:
        db: statesaga's database: a ``SagaEngine``, an SQLAlchemy ``Engine`` or a URL.
        broker: the broker adapter (``SqlBroker``, ``RabbitMQ``, ``MemoryBroker``).
        batch: events claimed and sent per turn.
        lease: seconds a claim lasts; a relay that stalls longer may see its
            events sent by another relay as well.
        poll: the longest idle wait between turns on SQLite (PostgreSQL wakes
            the relay when events are committed).
        clock: the time source, in UNIX seconds.

    Attributes:
        owner: this relay's id, written on the events it claims.
        sent: events it has published so far.
    """

    kind = "relay"

    def __init__(
        self,
        db: SagaEngine | Engine | str,
        broker: Broker,
        *,
        batch: int = 200,
        lease: float = 30.0,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(poll)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        self.store = OutboxStore(engine_of(db))
        self.store.ensure_schema()
        self.broker = broker
        self.batch = batch
        self.lease = lease
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sent = 0
        self._listener: Listener | None = None

    def __repr__(self) -> str:
        return f"<Relay {self.owner} to {self.broker!r}: {self.sent} sent>"

    def turn(self) -> int:
        """Claim a batch, send it, mark what the broker confirmed; return how many.

        Raises:
            BrokerError: the broker confirmed none of the batch (it was let go).
        """
        now = self._clock()
        rows = self.store.claim(self.owner, now + self.lease, now, self.batch)
        if not rows:
            return 0
        try:
            confirmed = self.broker.send([event_of(r) for r in rows])
        except BaseException:
            self.store.release(self.owner, rows)
            raise
        confirmed = max(0, min(confirmed, len(rows)))
        self.store.published(self.owner, rows[:confirmed], self._clock())
        self.store.release(self.owner, rows[confirmed:])
        self.sent += confirmed
        if confirmed < len(rows):
            raise BrokerError(
                repr(self.broker), f"confirmed {confirmed} of {len(rows)} events; the rest wait"
            )
        return confirmed

    def drain(self) -> int:
        """Publish every event in the outbox that no other relay holds; return how
        many this call published.

        Raises:
            BrokerError: the broker failed; what it did not confirm is left unsent.
        """
        total = 0
        while done := self.turn():
            total += done
        return total

    def _open(self) -> None:
        self._listener = self.store.listen(self.wake)

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        log.info("statesaga relay %s stopped after sending %d events", self.owner, self.sent)
