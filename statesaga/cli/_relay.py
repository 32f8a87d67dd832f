"""``statesaga relay``: publish the choreography's outbox into the database's own
queues (``SqlBroker``) or to RabbitMQ (or prune it)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import click

from statesaga.cli._db import Database
from statesaga.cli._options import db_option, debug_option

if TYPE_CHECKING:
    from statesaga.choreography import Broker

#: The broker when neither --broker nor STATESAGA_BROKER says: the database's own queues.
SQL_BROKER = "sql"


@click.command()
@db_option()
@click.option(
    "--broker",
    metavar="URL",
    envvar="STATESAGA_BROKER",
    show_envvar=True,
    default=SQL_BROKER,
    show_default=True,
    help="'sql': queues in the saga database itself (statesaga.choreography.sql.SqlBroker, "
    "nothing else to run); or RabbitMQ's AMQP URL (amqp://user:password@host:5672/vhost).",
)
@click.option(
    "--prefix",
    default="statesaga",
    show_default=True,
    help="RabbitMQ: names the exchange (PREFIX.events) and the participants' queues.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Events claimed and sent per turn.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a claim on events lasts; another relay takes over after.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Longest idle wait between turns, in seconds (SQLite; PostgreSQL tells at once).",
)
@click.option("--once", is_flag=True, help="Publish what the outbox holds now, then exit.")
@click.option(
    "--prune",
    "prune_days",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Instead of relaying: delete the events published more than DAYS ago, then exit "
    "(unpublished events and the inboxes are kept).",
)
@debug_option
def relay(
    db: Database,
    broker: str,
    prefix: str,
    batch: int,
    lease: float,
    poll: float,
    once: bool,
    prune_days: float | None,
) -> None:
    """Publish the choreography's outbox to its broker until SIGTERM or Ctrl-C.

    By default (--broker sql) the "broker" is the saga database's own queues
    (statesaga_deliveries), nothing else to run; an amqp:// URL relays to RabbitMQ.

    Each committed event is marked published once the broker confirms it (the
    database's queues: once they committed), each key's events in order; run
    several relays for availability (they share the work). A stop finishes the
    batch in hand; a second signal exits at once (the claim then
    expires after --lease and another relay sends those events). Creates the
    schema if the database has none. --prune DAYS deletes old published events
    instead (the inboxes keep their records, which drop a late duplicate).
    """
    from statesaga.choreography import RabbitMQ, Relay
    from statesaga.choreography.sql import SqlBroker

    if prune_days is not None:
        _prune(db, prune_days)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # pika logs every connection step, and each failure at length: the relay says it once.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    engine = db.engine()
    target: Broker | None = None
    try:
        if broker == SQL_BROKER:
            target = SqlBroker(engine)
            shown = "its own queues (statesaga_deliveries)"
        else:
            rabbit = RabbitMQ(broker, prefix=prefix)
            target = rabbit
            shown = f"{rabbit.shown} (exchange {rabbit.exchange})"
            rabbit.connect()
        running = Relay(engine, target, batch=batch, lease=lease, poll=poll)
        if once:
            sent = running.drain()
            click.echo(f"statesaga relay: {sent} events published to {shown}")
            return
        click.echo(
            f"statesaga relay {running.owner}: {db.shown} → {shown}. SIGTERM or Ctrl-C stops it.",
            err=True,
        )
        running.run()
        click.echo(f"statesaga relay stopped after publishing {running.sent} events", err=True)
    finally:
        if target is not None:
            target.close()
        engine.close()


def _prune(db: Database, days: float) -> None:
    """Delete the events published more than ``days`` days ago."""
    from statesaga.store._outbox import OutboxStore

    engine = db.engine()
    try:
        gone = OutboxStore(engine.store.engine).prune(time.time() - days * 86400)
    finally:
        engine.close()
    click.echo(f"statesaga relay: pruned {gone} events published more than {days:g} days ago")
