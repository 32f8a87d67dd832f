"""A consumer process for ``test_choreography_rabbitmq``: it drains the ledger's
queue from RabbitMQ and, at its ``pause_at``-th delivery, stops between the
commit of the effects and the acknowledgement, says so on standard output, and
waits there (reading standard input) until the test kills it with SIGKILL.

Usage: ``python -m tests.choreography_child DB_URL PREFIX PAUSE_AT``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from statesaga.choreography import (
    Consumer,
    Delivery,
    EventContext,
    Participant,
    RabbitMQ,
    Subscription,
    handles,
)
from statesaga.store import make_engine

app = sa.MetaData()
effects = sa.Table(
    "app_effects",
    app,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)


class Ledger(Participant):
    """Writes one effect row per ``money.moved`` and announces it."""

    name = "ledger"

    @handles("money.moved", emits=["ledger.written"])
    def write(self, ctx: EventContext) -> None:
        ctx.connection.execute(
            effects.insert().values(key=ctx.event.key, seq=ctx.event.payload["seq"])
        )
        ctx.publish("ledger.written", {"seq": ctx.event.payload["seq"]})


class PausingRabbitMQ(RabbitMQ):
    """Stops for good before the ``pause_at``-th acknowledgement, after saying so."""

    def __init__(self, pause_at: int, **options: Any) -> None:
        super().__init__(**options)
        self.pause_at = pause_at
        self.acks = 0

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        sub: Any = super().subscribe(queue, events)
        real_ack = sub.ack

        def ack(delivery: Delivery) -> None:
            self.acks += 1
            if self.acks == self.pause_at:
                # The effects of this delivery are committed; its ack is not sent.
                print(f"committed {delivery.event.id}", flush=True)
                sys.stdin.read()  # until killed
            real_ack(delivery)

        sub.ack = ack
        return sub  # type: ignore[no-any-return]


def main(url: str, prefix: str, pause_at: int) -> None:
    db = make_engine(url)
    consumer = Consumer(db, Ledger(), PausingRabbitMQ(pause_at, prefix=prefix))
    consumer.drain()
    print("drained", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
