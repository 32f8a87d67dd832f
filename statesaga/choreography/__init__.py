"""Choreography: services that react to each other's events, with no coordinator.

Where an orchestrated saga has one runner telling each service what to do,
a choreography has participants that publish events and react to those of
others. statesaga makes that reliable and visible:

- **a transactional outbox**: ``Participant.publish(connection, ...)`` (or
  ``ctx.publish`` in a handler, or a transactional saga step's
  ``ctx.connection``) writes the event in the same transaction as the state
  change it announces, so an event goes out if and only if that change
  commits;
- **a relay** (``Relay``, or ``statesaga relay``) hands committed events to the
  broker, each key's in order, and marks them published once it confirmed;
- **an inbox** per participant (``Inbox``, read from the broker by a
  ``Consumer``): each event's id is recorded in the transaction of the
  handler's effects, so a redelivered event is dropped: effects in the
  database happen exactly once, and the message is acknowledged only after;
- **declared participants**: each handler says which event it handles and
  which it may emit (``@handles``), enforced when it publishes, so that the
  implied flow can be drawn (``statesaga.diagrams.choreography``)::

    class Payments(Participant):
        name = "payments"

        @handles("order.created", emits=["payment.charged"], failures=["payment.failed"])
        def charge(self, ctx: EventContext) -> None:
            ...
            ctx.publish("payment.charged", {"order_id": ctx.event.key})

    broker = SqlBroker(engine)                 # or RabbitMQ("amqp://...")
    Relay(engine, broker).start()
    Consumer(engine, Payments(), broker).run()

Brokers: ``SqlBroker`` (``statesaga.choreography.sql``: durable queues in the
saga database itself, nothing else to run; the default of ``statesaga
relay``), ``RabbitMQ`` (needs ``pip install 'statesaga[rabbitmq]'``), and
``MemoryBroker`` (inside one process, for tests and demos: it loses in-flight
events on a crash); any object with the ``Broker`` protocol's methods will do.
"""

from __future__ import annotations

from statesaga.choreography._broker import Broker, Delivery, MemoryBroker, Subscription
from statesaga.choreography._consumer import Consumer
from statesaga.choreography._inbox import EventContext, Inbox
from statesaga.choreography._participant import Event, HandlerSpec, Participant, handles, publish
from statesaga.choreography._relay import Relay
from statesaga.choreography.rabbitmq import RabbitMQ
from statesaga.choreography.sql import SqlBroker

__all__ = [
    "Broker",
    "Consumer",
    "Delivery",
    "Event",
    "EventContext",
    "HandlerSpec",
    "Inbox",
    "MemoryBroker",
    "Participant",
    "RabbitMQ",
    "Relay",
    "SqlBroker",
    "Subscription",
    "handles",
    "publish",
]

# Public names report the package a user imports them from.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
