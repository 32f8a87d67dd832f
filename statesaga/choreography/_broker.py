"""What statesaga needs of a message broker, and one that lives in the process.

A broker adapter does two things. ``send`` hands events to the broker in the
order given and returns once the broker has confirmed them (durably stored or
routed); the relay marks published only what was confirmed. ``subscribe``
gives a participant's queue of the events it handles, from which a consumer
``get``s deliveries one at a time and ``ack``s each after its effects have
committed; ``requeue`` gives back every delivery not acknowledged, in order
(a handler failed: the queue is tried again from there), and ``dead_letter``
sets one aside for good.

``SqlBroker`` (``statesaga.choreography.sql``) keeps durable queues in the saga
database itself, nothing else to run; ``RabbitMQ``
(``statesaga.choreography.rabbitmq``) carries events across machines through a
broker. ``MemoryBroker`` here carries events between participants of one
process, for tests and demos only: it confirms an event as soon as the event is
in its in-memory queue, so the relay marks it published, and a crash before a
consumer has processed it loses it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

from statesaga.choreography._participant import Event


@attrs.frozen
class Delivery:
    """One delivery of an event from a queue.

    Attributes:
        event: the event.
        tag: the broker's handle for acknowledging it.
        redelivered: the broker delivered it before (it may have been processed).
    """

    event: Event
    tag: Any = attrs.field(eq=False)
    redelivered: bool = False


class Subscription(Protocol):
    """A participant's queue, as a consumer reads it (one thread at a time)."""

    def get(self, wait: float) -> Delivery | None:
        """The next delivery; ``None`` if none came within ``wait`` seconds
        (``0``: the queue is empty right now)."""

    def ack(self, delivery: Delivery) -> None:
        """The delivery's effects are committed: the broker may forget it."""

    def requeue(self) -> None:
        """Give back every unacknowledged delivery, in their order."""

    def dead_letter(self, delivery: Delivery) -> None:
        """Set the delivery aside for good (an operator looks at it)."""

    def close(self) -> None:
        """Stop reading; unacknowledged deliveries go back to the queue."""


class Broker(Protocol):
    """A message broker adapter (``SqlBroker``, ``RabbitMQ``, ``MemoryBroker``)."""

    def send(self, events: Sequence[Event]) -> int:
        """Publish ``events`` in order, each routed by its name, and wait for the
        broker's confirmation.

        Returns:
            How many of them, from the first, the broker confirmed (all of them
            unless it failed part-way).

        Raises:
            BrokerError: it confirmed none of them.
        """

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        """The durable queue ``queue``, receiving every event named in ``events``."""

    def close(self) -> None:
        """Close the connections the adapter opened."""


class MemoryBroker:
    """A broker inside the process, for tests and demos: a queue per subscriber,
    fed by ``send``.

    It loses events on a crash: ``send`` confirms an event once it is in memory,
    so the relay marks it published, and if the process dies before consumers
    have processed it, it is gone (neither the outbox nor any queue has it).
    For a deployment with only its database, use ``SqlBroker``
    (``statesaga.choreography.sql``), whose queues are tables.

    Events sent before a queue subscribed to them are not in it, as with a real
    broker. Deliveries not acknowledged when a subscription is requeued or
    closed go back to the front of their queue, in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[Event]] = {}
        self._bindings: dict[str, set[str]] = {}
        #: Events set aside by ``dead_letter``, by queue.
        self.dead: dict[str, list[Event]] = {}

    def __repr__(self) -> str:
        return f"<MemoryBroker: {len(self._queues)} queues>"

    def send(self, events: Sequence[Event]) -> int:
        """Append each event to the queue of every subscriber of its name."""
        with self._lock:
            for event in events:
                for queue, names in self._bindings.items():
                    if event.name in names:
                        self._queues[queue].append(event)
        return len(events)

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        """Declare ``queue`` (kept across subscriptions) bound to ``events``."""
        with self._lock:
            self._queues.setdefault(queue, collections.deque())
            self._bindings.setdefault(queue, set()).update(events)
        return _MemorySubscription(self, queue)

    def depth(self, queue: str) -> int:
        """How many events wait in ``queue``."""
        with self._lock:
            return len(self._queues.get(queue, ()))

    def close(self) -> None:
        """Nothing to close."""


class _MemorySubscription:
    def __init__(self, broker: MemoryBroker, queue: str) -> None:
        self._broker = broker
        self._queue = queue
        self._unacked: list[Event] = []
        self._seen: set[str] = set()

    def get(self, wait: float) -> Delivery | None:
        with self._broker._lock:
            q = self._broker._queues[self._queue]
            if not q:
                return None
            event = q.popleft()
            self._unacked.append(event)
        again = event.id in self._seen
        self._seen.add(event.id)
        return Delivery(event, event.id, again)

    def ack(self, delivery: Delivery) -> None:
        self._unacked = [e for e in self._unacked if e.id != delivery.tag]

    def requeue(self) -> None:
        with self._broker._lock:
            self._broker._queues[self._queue].extendleft(reversed(self._unacked))
        self._unacked = []

    def dead_letter(self, delivery: Delivery) -> None:
        self.ack(delivery)
        with self._broker._lock:
            self._broker.dead.setdefault(self._queue, []).append(delivery.event)

    def close(self) -> None:
        self.requeue()
