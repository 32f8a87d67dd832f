"""The consumer: reads a participant's queue and processes each delivery through
its inbox, acknowledging it only after its effects have committed.

Deliveries are processed one at a time, in queue order, so one key's events
are handled in the order they were published. A handler that raises rolls its
transaction back; the consumer gives back every unacknowledged delivery, in
order, and tries again from there, up to ``max_attempts`` times for the same
event, after which that event is dead-lettered (set aside for an operator,
and recorded in the inbox) and the queue goes on. A business failure is not
an exception: the handler publishes one of its declared ``failures`` events
instead, and the flow compensates.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from statesaga.choreography._broker import Broker, Delivery, Subscription
from statesaga.choreography._inbox import Inbox
from statesaga.choreography._loop import Loop, log
from statesaga.choreography._participant import Participant

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine


class Consumer(Loop):
    """Delivers a participant's events to it from the broker.

    ``run()``, ``start()``, ``with consumer:`` or ``drain()``, as a relay.

    Args:
        db: statesaga's database (``SagaEngine``, ``Engine`` or URL).
        participant: the participant whose handlers run.
        broker: the broker adapter.
        queue: the participant's queue (default: its name).
        max_attempts: tries of an event whose handler raises before it is
            dead-lettered.
        poll: how long one read waits for a delivery, in seconds.
        clock: the time source, in UNIX seconds.

    Attributes:
        inbox: the participant's inbox.
        processed: deliveries whose handler ran and committed.
        duplicates: deliveries dropped as already processed.
        dead: ids of events dead-lettered.
    """

    kind = "consumer"
    turn_waits = True

    def __init__(
        self,
        db: SagaEngine | Engine | str,
        participant: Participant,
        broker: Broker,
        *,
        queue: str | None = None,
        max_attempts: int = 3,
        poll: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(poll)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        self.inbox = Inbox(db, participant, clock=clock)
        self.broker = broker
        self.queue = queue or participant.name
        self.max_attempts = max_attempts
        self.processed = 0
        self.duplicates = 0
        self.dead: list[str] = []
        self._clock = clock
        self._failures: collections.Counter[str] = collections.Counter()
        self._subscription: Subscription | None = None

    def __repr__(self) -> str:
        return (
            f"<Consumer of {self.inbox.participant.name!r}: {self.processed} processed, "
            f"{self.duplicates} duplicates, {len(self.dead)} dead>"
        )

    def subscribe(self) -> Subscription:
        """Declare the participant's queue and its bindings (before events are
        published, so that none is missed); done by the first read."""
        if self._subscription is None:
            self._subscription = self.broker.subscribe(self.queue, self.inbox.events)
        return self._subscription

    def turn(self) -> int:
        """Wait up to ``poll`` for one delivery and process it; 1 if one came."""
        return self._one(self.poll)

    def drain(self) -> int:
        """Process deliveries until the queue is empty; return how many ran their
        handler (duplicates and dead letters not counted)."""
        before = self.processed
        while self._one(0):
            pass
        return self.processed - before

    def close(self) -> None:
        """Close the subscription: what was not acknowledged goes back to the queue."""
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def _close(self) -> None:
        self.close()

    def _one(self, wait: float) -> int:
        sub = self.subscribe()
        delivery = sub.get(wait)
        if delivery is None:
            return 0
        self._handle(sub, delivery)
        return 1

    def _handle(self, sub: Subscription, delivery: Delivery) -> None:
        event = delivery.event
        try:
            ran = self.inbox.deliver(event)
        except Exception as exc:
            self._failures[event.id] += 1
            tries = self._failures[event.id]
            if tries < self.max_attempts:
                log.warning(
                    "statesaga consumer %s: %s %s failed (attempt %d of %d): %s; trying again",
                    self.inbox.participant.name,
                    event.name,
                    event.id,
                    tries,
                    self.max_attempts,
                    exc,
                )
                sub.requeue()
                return
            log.error(
                "statesaga consumer %s: %s %s failed %d times; dead-lettered: %s",
                self.inbox.participant.name,
                event.name,
                event.id,
                tries,
                exc,
            )
            del self._failures[event.id]
            try:
                self.inbox.store.mark_dead(
                    self.inbox.participant.name, event.id, event.name, self._clock()
                )
            except Exception as record:  # the broker's dead-letter queue still has it
                log.warning("statesaga consumer: recording the dead letter failed: %s", record)
            sub.dead_letter(delivery)
            self.dead.append(event.id)
            return
        self._failures.pop(event.id, None)
        sub.ack(delivery)
        if ran:
            self.processed += 1
        else:
            self.duplicates += 1
