"""The seed's choreography with three orders, run over any broker: the tests of
each broker adapter (SQL queues, RabbitMQ) drive the same flow and check it
ends the same way."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine

from definitions.choreography import Inventory, Orders, Payments
from statesaga.choreography import Broker, Consumer, Relay

#: How the three orders end: (order status, payment, stock reserved).
THREE_ORDERS_END = {
    "o1": ("confirmed", "charged", True),
    "o2": ("cancelled", None, False),
    "o3": ("cancelled", "refunded", False),
}


def run_three_orders(db: Engine, broker: Callable[[], Broker]) -> tuple[Relay, list[Consumer]]:
    """Place three orders (one paid and served, one declined, one out of stock),
    then relay and consume until nothing moves; each participant's consumer and
    the relay get a broker of their own. Returns the relay and the consumers."""
    orders = Orders()
    consumers = [
        Consumer(db, p, broker())
        for p in (orders, Payments(frozenset({"broke"})), Inventory(frozenset({"o3"})))
    ]
    for c in consumers:
        c.subscribe()
    relay = Relay(db, broker())
    with db.begin() as conn:
        orders.place(conn, "o1", "ann", 10.0)
        orders.place(conn, "o2", "broke", 20.0)
        orders.place(conn, "o3", "bob", 30.0)
    while relay.drain() + sum(c.drain() for c in consumers):
        pass
    return relay, consumers
