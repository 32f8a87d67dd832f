"""Choreography throughput against a raw floor measured in the same run.

Three phases, each timed for statesaga and for the same work done by hand with
raw psycopg (and raw pika for the broker), on the same PostgreSQL and RabbitMQ:

1. publish: N events, each in a transaction of its own (what an application
   does): statesaga's ``Participant.publish`` vs one raw ``INSERT`` + ``COMMIT``;
2. relay: the outbox to RabbitMQ with publisher confirms: ``Relay.drain`` vs a
   raw claim (``FOR UPDATE SKIP LOCKED``), ``basic_publish`` of each message and
   one ``UPDATE`` + ``COMMIT`` per batch of the same size;
3. consume: each delivery processed through the inbox (record the id, write the
   effect, commit, ack): ``Consumer.drain`` vs raw ``basic_get`` + two
   ``INSERT``s + ``COMMIT`` + ``basic_ack``.

It prints events per second and the ratio statesaga / floor for each phase.

    python benchmarks/choreography.py [--events 5000] [--keys 500] [--batch 200]
        [--db postgresql+psycopg://postgres@127.0.0.1:5432/test] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable

import pika
import psycopg
import sqlalchemy as sa

from statesaga.choreography import Consumer, EventContext, Participant, RabbitMQ, Relay, handles
from statesaga.store import make_engine
from statesaga.store.migrations import upgrade

app = sa.MetaData()
effects = sa.Table(
    "bench_effects",
    app,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64)),
)


class Source(Participant):
    """Publishes the benchmark's events."""

    name = "source"
    emits = ("bench.happened",)


class Sink(Participant):
    """Writes one effect row per event."""

    name = "sink"

    @handles("bench.happened")
    def write(self, ctx: EventContext) -> None:
        ctx.connection.execute(effects.insert().values(event_id=ctx.event.id, key=ctx.event.key))


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=500)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--db", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    args = parser.parse_args()
    n, batch = args.events, args.batch
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    raw_url = args.db.replace("postgresql+psycopg://", "postgresql://")
    admin = psycopg.connect(raw_url, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    db = make_engine(f"{args.db}?options=-csearch_path%3D{schema}")
    rabbit = RabbitMQ(args.broker, prefix=prefix, prefetch=batch)
    results: dict[str, tuple[float, float]] = {}
    try:
        upgrade(db)
        app.create_all(db)
        raw = psycopg.connect(raw_url, options=f"-csearch_path={schema}")
        raw.execute(
            "CREATE TABLE floor_outbox (position BIGSERIAL PRIMARY KEY, event_id TEXT, "
            "name TEXT, key TEXT, payload TEXT, published_at DOUBLE PRECISION, "
            "claimed_by TEXT, claim_until DOUBLE PRECISION)"
        )
        raw.execute("CREATE TABLE floor_inbox (event_id TEXT PRIMARY KEY, at DOUBLE PRECISION)")
        raw.execute("CREATE TABLE floor_effects (event_id TEXT PRIMARY KEY, key TEXT)")
        raw.commit()
        sink = Consumer(db, Sink(), rabbit)
        sink.subscribe()
        source = Source()
        keys = [f"k{i % args.keys}" for i in range(n)]

        # 1. publish
        def publish() -> None:
            for i, key in enumerate(keys):
                with db.begin() as conn:
                    source.publish(conn, "bench.happened", {"i": i}, key=key)

        def publish_floor() -> None:
            for i, key in enumerate(keys):
                raw.execute(
                    "INSERT INTO floor_outbox (event_id, name, key, payload) "
                    "VALUES (%s, %s, %s, %s)",
                    (uuid.uuid4().hex, "bench.happened", key, json.dumps({"i": i})),
                )
                raw.commit()

        results["publish"] = (timed(publish), timed(publish_floor))

        # 2. relay. The outbox was created and filled seconds ago: give it the
        # statistics autovacuum gives a live table within its naptime (without them
        # PostgreSQL probes the per-key check through the wrong index, ~40x slower).
        with db.begin() as conn:
            conn.exec_driver_sql("ANALYZE statesaga_outbox")
        relay = Relay(db, rabbit, batch=batch)
        params = pika.URLParameters(args.broker)
        amqp = pika.BlockingConnection(params)
        channel = amqp.channel()
        channel.confirm_delivery()
        floor_queue = f"{prefix}.floor"
        channel.exchange_declare(f"{prefix}.floor", exchange_type="topic", durable=True)
        channel.queue_declare(floor_queue, durable=True)
        channel.queue_bind(floor_queue, f"{prefix}.floor", routing_key="bench.happened")

        def relay_floor() -> None:
            while True:
                rows = raw.execute(
                    "UPDATE floor_outbox SET claimed_by = 'me', claim_until = %s "
                    "WHERE position IN (SELECT position FROM floor_outbox "
                    "WHERE published_at IS NULL ORDER BY position LIMIT %s "
                    "FOR UPDATE SKIP LOCKED) RETURNING position, event_id, name, key, payload",
                    (time.time() + 30, batch),
                ).fetchall()
                raw.commit()
                if not rows:
                    return
                for _, event_id, name, key, payload in rows:
                    channel.basic_publish(
                        f"{prefix}.floor",
                        name,
                        payload.encode(),
                        pika.BasicProperties(
                            message_id=event_id, delivery_mode=2, headers={"key": key}
                        ),
                    )
                raw.execute(
                    "UPDATE floor_outbox SET published_at = %s, claimed_by = NULL "
                    "WHERE position = ANY(%s)",
                    (time.time(), [r[0] for r in rows]),
                )
                raw.commit()

        results["relay"] = (timed(relay.drain), timed(relay_floor))

        # 3. consume
        def consume_floor() -> None:
            while True:
                method, props, body = channel.basic_get(floor_queue)
                if method is None:
                    return
                json.loads(body)
                raw.execute(
                    "INSERT INTO floor_inbox VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (props.message_id, time.time()),
                )
                raw.execute(
                    "INSERT INTO floor_effects VALUES (%s, %s)",
                    (props.message_id, props.headers["key"]),
                )
                raw.commit()
                channel.basic_ack(method.delivery_tag)

        results["consume"] = (timed(sink.drain), timed(consume_floor))
        assert sink.processed == n, sink
        with db.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(effects)).scalar() == n
        channel.queue_delete(floor_queue)
        channel.exchange_delete(f"{prefix}.floor")
        amqp.close()
        raw.close()
    finally:
        sink_queues = ["sink"]
        rabbit.delete(sink_queues)
        rabbit.close()
        db.dispose()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()

    print(f"choreography: {n} events over {args.keys} keys, batch {batch}, PostgreSQL + RabbitMQ")
    print(f"{'phase':<8} {'statesaga ev/s':>15} {'floor ev/s':>12} {'ratio':>7}")
    for phase, (ours, floor) in results.items():
        print(f"{phase:<8} {n / ours:>15.0f} {n / floor:>12.0f} {floor / ours:>7.2f}")
    total_ours = sum(o for o, _ in results.values())
    total_floor = sum(f for _, f in results.values())
    print(
        f"{'end2end':<8} {n / total_ours:>15.0f} {n / total_floor:>12.0f} "
        f"{total_floor / total_ours:>7.2f}"
    )
    print("ratio = statesaga's throughput / the floor's (1.00: as fast as raw SQL and pika)")


if __name__ == "__main__":
    main()
