"""A consumer process for the kill tests of ``test_choreography_rabbitmq`` and
``test_choreography_sql``: it drains the ledger's queue and, at its
``pause_at``-th delivery, stops between the commit of the effects and the
acknowledgement, says so on standard output, and waits there (reading standard
input) until the test kills it with SIGKILL.

Usage: ``python -m tests.choreography_child DB_URL BROKER PAUSE_AT``, where
BROKER is ``sql`` (the ``SqlBroker`` in DB_URL's database, its holds lasting an
hour: only a later clock takes them over) or a RabbitMQ prefix.

It also holds the small money-moving application the choreography tests share
(its table, participants, database and effect rows), so that the child and
the tests agree on it.
"""

from __future__ import annotations

import contextlib
import select
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from statesaga.choreography import (
    Broker,
    Consumer,
    Delivery,
    Event,
    EventContext,
    Participant,
    RabbitMQ,
    Subscription,
    handles,
)
from statesaga.choreography.sql import SqlBroker
from statesaga.store import make_engine

#: A generous bound on any one wait for the child; never reached when all is well.
PATIENCE = 60.0

app = sa.MetaData()
effects = sa.Table(
    "app_effects",
    app,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)


class Bank(Participant):
    """Publishes ``money.moved`` from outside any handler."""

    name = "bank"
    emits = ("money.moved",)


@contextlib.contextmanager
def app_database(url: str) -> Iterator[sa.Engine]:
    """An engine on ``url`` with statesaga's schema, the ledger's table and the
    seed flow's tables; disposed of at the end."""
    from definitions.choreography import create_tables
    from statesaga.store.migrations import upgrade

    engine = make_engine(url)
    upgrade(engine)
    app.create_all(engine)
    create_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def effect_rows(engine: sa.Engine, prefix: str = "") -> list[tuple[str, int]]:
    """The ledger's effects, in the order written (of the keys starting with ``prefix``)."""
    with engine.connect() as conn:
        done = conn.execute(sa.select(effects.c.key, effects.c.seq).order_by(effects.c.n))
        return [(k, s) for k, s in done if k.startswith(prefix)]


class Ledger(Participant):
    """Writes one effect row per ``money.moved`` and announces it."""

    name = "ledger"

    @handles("money.moved", emits=["ledger.written"])
    def write(self, ctx: EventContext) -> None:
        ctx.connection.execute(
            effects.insert().values(key=ctx.event.key, seq=ctx.event.payload["seq"])
        )
        ctx.publish("ledger.written", {"seq": ctx.event.payload["seq"]})


class Fussy(Participant):
    """Writes one effect row per ``money.moved``, then raises for ``seq`` 1 (its
    transaction rolls back): the event the consumers' dead-letter tests set aside."""

    name = "fussy"

    @handles("money.moved")
    def write(self, ctx: EventContext) -> None:
        ctx.connection.execute(
            effects.insert().values(key=ctx.event.key, seq=ctx.event.payload["seq"])
        )
        if ctx.event.payload["seq"] == 1:
            raise ValueError("seq 1 is cursed")


class Pausing:
    """A broker whose subscriptions stop for good before the ``pause_at``-th
    acknowledgement, after saying so."""

    def __init__(self, broker: Broker, pause_at: int) -> None:
        self.broker = broker
        self.pause_at = pause_at
        self.acks = 0

    def send(self, events: Sequence[Event]) -> int:
        return self.broker.send(events)

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        sub: Any = self.broker.subscribe(queue, events)
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

    def close(self) -> None:
        self.broker.close()


def kill_after_commit(url: str, broker: str, pause_at: int, cwd: str) -> str:
    """Run this module as a child process on ``url`` and ``broker``, wait until it
    has committed the effects of its ``pause_at``-th delivery, SIGKILL it there
    (before the acknowledgement), and return that delivery's event id."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.choreography_child", url, broker, str(pause_at)],
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], PATIENCE)
        assert ready, f"the child never reached its acknowledgement {pause_at}"
        line = child.stdout.readline()
        assert line.startswith("committed "), line
        child.send_signal(signal.SIGKILL)
        assert child.wait(PATIENCE) == -signal.SIGKILL
        return line.split()[1]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(PATIENCE)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def main(url: str, broker: str, pause_at: int) -> None:
    db = make_engine(url)
    real: Broker = SqlBroker(db, lease=3600.0) if broker == "sql" else RabbitMQ(prefix=broker)
    consumer = Consumer(db, Ledger(), Pausing(real, pause_at))
    consumer.drain()
    print("drained", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
