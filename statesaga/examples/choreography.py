"""The seed's order flow as a choreography: no coordinator, three participants.

``Orders`` places an order and publishes ``order.created``; ``Payments`` charges
it and publishes ``payment.charged`` (or ``payment.failed``); ``Inventory``
reserves stock and publishes ``inventory.reserved`` (or
``inventory.reservation_failed``). ``Orders`` reacts: it confirms on a
reservation, and on either failure it cancels the order, publishing
``order.cancelled``, on which ``Payments`` refunds whatever it had charged.
Every participant writes its own table through ``ctx.connection``, in the
transaction that records the event as processed: each effect happens once,
however often the broker delivers the event.

Whatever fails, every order ends consistent: confirmed, charged and reserved;
or cancelled, with its payment refunded or never taken, and no stock held.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga.choreography import EventContext, Participant, handles

__all__ = [
    "Inventory",
    "Orders",
    "Payments",
    "create_tables",
    "example_run",
    "metadata",
    "orders",
    "payments",
    "reservations",
    "state_of",
]

metadata = sa.MetaData()
orders = sa.Table(
    "shop_orders",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("customer", sa.String(64), nullable=False),
    sa.Column("total", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, confirmed, cancelled
)
payments = sa.Table(
    "shop_payments",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # charged, refunded
)
reservations = sa.Table(
    "shop_reservations",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
)


def create_tables(engine: Engine) -> None:
    """Create the shop's tables in ``engine``'s database (statesaga's own are
    created by the relay, inbox or engine)."""
    metadata.create_all(engine)


class Orders(Participant):
    """Places orders; confirms or cancels them as the others report."""

    name = "orders"
    emits = ("order.created",)

    def place(self, conn: Connection, order_id: str, customer: str, total: float) -> None:
        """Record a pending order and announce it, in the caller's transaction."""
        conn.execute(
            orders.insert().values(id=order_id, customer=customer, total=total, status="pending")
        )
        self.publish(conn, "order.created", {"customer": customer, "total": total}, key=order_id)

    @handles("inventory.reserved", emits=["order.confirmed"])
    def confirm(self, ctx: EventContext) -> None:
        """Stock is held and the payment taken: the order is confirmed."""
        _set_status(ctx.connection, ctx.event.key, "confirmed")
        ctx.publish("order.confirmed")

    @handles("payment.failed", emits=["order.cancelled"], compensates=True)
    def cancel_unpaid(self, ctx: EventContext) -> None:
        """The payment was declined: cancel the order (nothing was charged)."""
        _set_status(ctx.connection, ctx.event.key, "cancelled")
        ctx.publish("order.cancelled", {"reason": ctx.event.payload["reason"]})

    @handles("inventory.reservation_failed", emits=["order.cancelled"], compensates=True)
    def cancel_unreserved(self, ctx: EventContext) -> None:
        """No stock: cancel the order; ``order.cancelled`` has the payment refunded."""
        _set_status(ctx.connection, ctx.event.key, "cancelled")
        ctx.publish("order.cancelled", {"reason": ctx.event.payload["reason"]})


class Payments(Participant):
    """Charges orders; refunds them when they are cancelled.

    Args:
        declined: customers whose cards are declined.
    """

    name = "payments"

    def __init__(self, declined: frozenset[str] = frozenset()) -> None:
        self.declined = declined

    @handles("order.created", emits=["payment.charged"], failures=["payment.failed"])
    def charge(self, ctx: EventContext) -> None:
        """Take the order's total, or say why not."""
        order = ctx.event.payload
        if order["customer"] in self.declined:
            ctx.publish("payment.failed", {"reason": "card declined"})
            return
        ctx.connection.execute(
            payments.insert().values(
                order_id=ctx.event.key, amount=order["total"], status="charged"
            )
        )
        ctx.publish("payment.charged", {"amount": order["total"]})

    @handles("order.cancelled", emits=["payment.refunded"], compensates=True)
    def refund(self, ctx: EventContext) -> None:
        """Give the money back for a cancelled order, if any was taken (an order
        whose payment was declined has nothing to refund: nothing is published)."""
        refunded = ctx.connection.execute(
            payments.update()
            .where(payments.c.order_id == ctx.event.key, payments.c.status == "charged")
            .values(status="refunded")
        )
        if refunded.rowcount:
            ctx.publish("payment.refunded", {"reason": ctx.event.payload["reason"]})


class Inventory(Participant):
    """Reserves stock for paid orders.

    Args:
        out_of_stock: orders for which no stock is left.
    """

    name = "inventory"

    def __init__(self, out_of_stock: frozenset[str] = frozenset()) -> None:
        self.out_of_stock = out_of_stock

    @handles(
        "payment.charged",
        emits=["inventory.reserved"],
        failures=["inventory.reservation_failed"],
    )
    def reserve(self, ctx: EventContext) -> None:
        """Hold the order's stock, or say there is none."""
        if ctx.event.key in self.out_of_stock:
            ctx.publish("inventory.reservation_failed", {"reason": "out of stock"})
            return
        ctx.connection.execute(reservations.insert().values(order_id=ctx.event.key))
        ctx.publish("inventory.reserved")


def _set_status(conn: Connection, order_id: str | None, status: str) -> None:
    conn.execute(orders.update().where(orders.c.id == order_id).values(status=status))


def example_run(engine: Engine) -> str:
    """Run one order whose stock is missing through the whole flow, in ``engine``'s
    database, with a broker inside the process; return its key. The order is
    charged, cannot be reserved, is cancelled and refunded: the drawing of its
    events (``diagrams/choreography/order-flow-example-run.svg``) shows the
    failure path."""
    from statesaga.choreography import Consumer, MemoryBroker, Relay

    create_tables(engine)
    broker = MemoryBroker()
    orders = Orders()
    consumers = [
        Consumer(engine, p, broker)
        for p in (orders, Payments(), Inventory(out_of_stock=frozenset({"o-1"})))
    ]
    for c in consumers:
        c.subscribe()
    relay = Relay(engine, broker)
    with engine.begin() as conn:
        orders.place(conn, "o-1", "ann", 42.0)
    while relay.drain() + sum(c.drain() for c in consumers):
        pass
    return "o-1"


def state_of(engine: Engine) -> dict[str, tuple[str, str | None, bool]]:
    """Each order's status, its payment's status (``None``: none) and whether
    stock is reserved for it."""
    with engine.connect() as conn:
        paid = dict(conn.execute(sa.select(payments.c.order_id, payments.c.status)).all())
        held = set(conn.execute(sa.select(reservations.c.order_id)).scalars())
        return {
            o.id: (o.status, paid.get(o.id), o.id in held)
            for o in conn.execute(sa.select(orders.c.id, orders.c.status))
        }
