"""The embedded broker (``SqlBroker``): queues in the saga database, on SQLite and
PostgreSQL, losing nothing when the relay or a consumer dies.

What is checked: the seed's order flow end to end through it; a relay that dies
after the broker committed, before marking published, makes a second delivery
and still one effect; a consumer process SIGKILLed between its effects' commit
and the acknowledgement loses nothing and doubles nothing; queues see only what
was sent after they were bound; two consumers of one queue never hold one
delivery, and keep each key in order; dead letters are kept and can be read;
and, by Hypothesis, any schedule of relay and consumer crashes.

Time is a fake clock wherever a hold or a claim has to run out; waits are for a
condition, bounded by a limit never reached when all is well.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from definitions.choreography import state_of
from statesaga import SagaEngine
from statesaga.choreography import (
    Consumer,
    Delivery,
    Event,
    EventContext,
    Participant,
    Relay,
    Subscription,
    handles,
    publish,
)
from statesaga.choreography.sql import SqlBroker
from statesaga.store import make_engine
from statesaga.store.migrations import upgrade
from tests.choreography_child import (
    Bank,
    Fussy,
    Ledger,
    app,
    app_database,
    effect_rows,
    effects,
    kill_after_commit,
)
from tests.seed_flow import THREE_ORDERS_END, run_three_orders

ROOT = Path(__file__).resolve().parents[1]
#: The bound on any one wait; never reached when all is well.
PATIENCE = 60.0


class Clock:
    """A fake clock, moved on by hand (shared by every example of a test run, so
    that holds and claims left by one example are long gone for the next)."""

    def __init__(self, start: float = 1e9) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """The test's database with statesaga's schema and the application's tables."""
    with app_database(db_url) as engine:
        yield engine


def in_key_order(done: list[tuple[str, int]]) -> bool:
    """Each key's effects were written in the order of their sequence numbers."""
    by_key: dict[str, list[int]] = {}
    for k, s in done:
        by_key.setdefault(k, []).append(s)
    return all(seqs == sorted(seqs) for seqs in by_key.values())


def move_money(engine: Engine, count: int, keys: int, prefix: str = "k") -> None:
    with engine.begin() as conn:
        for seq in range(count):
            Bank().publish(conn, "money.moved", {"seq": seq}, key=f"{prefix}{seq % keys}")


# -- the seed's example, end to end ----------------------------------------------------


def test_the_seeds_order_flow_runs_over_the_sql_broker(db: Engine) -> None:
    """Three orders (one paid and served, one declined, one out of stock) flow
    through the relay, the SQL queues and the three participants' consumers, each
    with a broker of its own on the database, and end consistent; every event is
    processed once, and the queues are empty at the end."""
    relay, consumers = run_three_orders(db, lambda: SqlBroker(db))
    assert state_of(db) == THREE_ORDERS_END
    names = sorted(e.name for e in relay.store.events())
    assert relay.store.pending() == 0
    # Every event but the ends (order.confirmed, payment.refunded) is handled once.
    assert sum(c.processed for c in consumers) == len(names) - 2
    assert sum(c.duplicates for c in consumers) == 0
    broker = SqlBroker(db)
    assert all(broker.depth(q) == 0 for q in ("orders", "payments", "inventory"))


def test_a_worker_relays_into_the_sql_broker(db_url: str) -> None:
    """``engine.worker(relay=SqlBroker(engine))``: what a saga's transactional step
    publishes reaches the SQL queue of a subscribed participant when the worker drains."""
    from statesaga import Saga, StepContext, step

    class Paying(Saga):
        name = "paying"
        input_type = int

        @step(transactional=True)
        def pay(self, ctx: StepContext) -> None:
            assert ctx.connection is not None
            publish(ctx.connection, "money.moved", {"seq": ctx.input}, key="w")

    with SagaEngine(db_url) as engine:
        engine.register(Paying)
        app.create_all(engine.store.engine)
        broker = SqlBroker(engine)
        ledger = Consumer(engine, Ledger(), broker)
        ledger.subscribe()
        engine.start(Paying, 7)
        engine.worker(relay=broker).drain()
        assert broker.depth("ledger") == 1
        assert ledger.drain() == 1
        assert effect_rows(engine.store.engine) == [("w", 7)]


# -- crashes ----------------------------------------------------------------------------


class Crash(BaseException):
    """A process dying: nothing catches it, nothing after it runs."""


def crash(*_args: Any, **_kwargs: Any) -> Any:
    raise Crash()


def test_a_relay_dying_after_the_send_before_the_mark_delivers_twice_with_one_effect(
    db: Engine,
) -> None:
    """The relay sends an event (committed in the queue) and dies before marking it
    published. Once its claim runs out another relay sends it again: the queue holds
    it twice; the consumer processes one and drops the other."""
    clock = Clock()
    broker = SqlBroker(db, clock=clock)
    ledger = Consumer(db, Ledger(), broker, clock=clock)
    ledger.subscribe()
    move_money(db, 1, 1)
    dying = Relay(db, broker, lease=10.0, clock=clock)
    dying.store.published = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        dying.turn()
    assert broker.depth("ledger") == 1
    assert Relay(db, broker, clock=clock).drain() == 0  # its claim still holds
    clock.advance(11.0)
    assert Relay(db, broker, clock=clock).drain() == 1
    assert broker.depth("ledger") == 2
    assert ledger.drain() == 1
    assert (ledger.processed, ledger.duplicates) == (1, 1)
    assert effect_rows(db) == [("k0", 0)]
    assert broker.depth("ledger") == 0


def test_a_consumer_killed_between_commit_and_ack_loses_nothing_and_doubles_nothing(
    db: Engine, db_url: str
) -> None:
    """A consumer process commits the effects of its 5th delivery and is SIGKILLed
    before acknowledging it; the delivery stays held (an hour, in the child). Another
    consumer processes every other key meanwhile, but not that key's later events;
    once the hold has run out (a later clock), it gets the delivery again, drops it
    as a duplicate and processes the rest: every effect once, each key's in order."""
    broker = SqlBroker(db)
    Consumer(db, Ledger(), broker).subscribe()
    move_money(db, 12, 3)
    assert Relay(db, broker).drain() == 12

    paused = kill_after_commit(db_url, "sql", 5, str(ROOT))
    assert paused == Relay(db, broker).store.events()[4].event_id
    assert len(effect_rows(db)) == 5  # the 5th's effects committed before the kill
    assert broker.depth("ledger") == 8  # the 5th is still there

    meanwhile = Consumer(db, Ledger(), broker)
    assert meanwhile.drain() == 5  # k0's and k2's rest; k1 waits behind the held one
    assert {k for k, _ in effect_rows(db)[5:]} == {"k0", "k2"}
    later = SqlBroker(db, clock=lambda: time.time() + 7200)
    after = Consumer(db, Ledger(), later)
    assert after.drain() == 2
    assert after.duplicates == 1
    done = effect_rows(db)
    assert sorted(done) == sorted((f"k{s % 3}", s) for s in range(12))
    assert in_key_order(done)
    assert paused in after.inbox.processed()
    assert broker.depth("ledger") == 0


# -- queues and their consumers ---------------------------------------------------------


def test_events_sent_before_a_queue_is_bound_do_not_reach_it(db: Engine) -> None:
    """As with a real broker: an event sent while no queue is bound to its name
    reaches no queue (the relay still marks it published); one sent after the
    binding does. A binding outlives the subscription that made it."""
    broker = SqlBroker(db)
    relay = Relay(db, broker)
    move_money(db, 1, 1)
    assert relay.drain() == 1
    sub = broker.subscribe("ledger", ["money.moved"])
    assert sub.get(0) is None
    sub.close()
    move_money(db, 1, 1)
    assert relay.drain() == 1
    assert broker.depth("ledger") == 1
    assert broker.store.bound("ledger") == ["money.moved"]


def test_a_delivery_not_acknowledged_comes_back_redelivered(db: Engine) -> None:
    """Given and not acknowledged, a delivery goes back to the queue when the
    subscription is requeued or closed, and is given again marked ``redelivered``;
    acknowledged, it is gone."""
    broker = SqlBroker(db)
    sub = broker.subscribe("ledger", ["money.moved"])
    broker.send([Event("e1", "money.moved", "k", {"seq": 1})])
    first = sub.get(0)
    assert first is not None and not first.redelivered
    assert sub.get(0) is None  # held: not given twice
    sub.requeue()
    again = sub.get(0)
    assert again is not None and again.redelivered and again.event == first.event
    sub.close()
    other = broker.subscribe("ledger", [])
    last = other.get(0)
    assert last is not None and last.redelivered
    other.ack(last)
    assert other.get(0) is None and broker.depth("ledger") == 0


def test_two_subscriptions_of_one_queue_share_keys_never_a_delivery(db: Engine) -> None:
    """While one subscription holds a key's delivery, another gets neither it nor
    that key's next one, but does get other keys'; the next of the key comes once
    the first is acknowledged."""
    broker = SqlBroker(db)
    a = broker.subscribe("ledger", ["money.moved"])
    b = SqlBroker(db).subscribe("ledger", ["money.moved"])
    broker.send(
        [
            Event("a1", "money.moved", "a", {}),
            Event("a2", "money.moved", "a", {}),
            Event("b1", "money.moved", "b", {}),
        ]
    )

    def got(sub: Subscription) -> Delivery:
        d = sub.get(0)
        assert d is not None
        return d

    first = got(a)
    assert first.event.id == "a1"
    other = got(b)
    assert other.event.id == "b1"
    assert b.get(0) is None and a.get(0) is None  # a2 waits behind a1
    a.ack(first)
    assert got(b).event.id == "a2"


def test_two_consumers_of_one_queue_process_each_event_once_in_key_order(
    db_url: str, db: Engine
) -> None:
    """Two consumers, each with its own engine and broker (as two processes), run
    side by side on one queue: every event is processed by exactly one of them
    (neither drops a duplicate: no delivery was given to both), each key's in order."""
    move_money(db, 60, 6)
    engines = [make_engine(db_url) for _ in range(4)]
    consumers = [
        Consumer(engines[n], Ledger(), SqlBroker(engines[n + 2]), poll=0.05) for n in range(2)
    ]
    for c in consumers:
        c.subscribe()
    assert Relay(db, SqlBroker(db)).drain() == 60
    with consumers[0], consumers[1]:
        deadline = time.monotonic() + PATIENCE
        while sum(c.processed for c in consumers) < 60:
            assert time.monotonic() < deadline, "the consumers stalled"
            time.sleep(0.01)
    assert sum(c.duplicates for c in consumers) == 0
    done = effect_rows(db)
    assert sorted(done) == sorted((f"k{s % 6}", s) for s in range(60))
    assert in_key_order(done)
    for e in engines:
        e.dispose()


def test_a_handler_that_keeps_failing_is_dead_lettered_and_kept(db: Engine) -> None:
    """A handler that raises for one event is tried max_attempts times, then the
    event is set aside in the table: readable as a dead letter by any broker on the
    database, no longer waiting, not blocking its key's next event."""

    broker = SqlBroker(db)
    fussy = Consumer(db, Fussy(), broker, max_attempts=3)
    fussy.subscribe()
    move_money(db, 3, 1)
    assert Relay(db, broker).drain() == 3
    assert fussy.drain() == 2
    assert len(fussy.dead) == 1
    assert effect_rows(db) == [("k0", 0), ("k0", 2)]
    [dead] = SqlBroker(db).dead_letters("fussy")
    assert dead.payload == {"seq": 1} and dead.id == fussy.dead[0]
    assert broker.depth("fussy") == 0


def test_statesaga_relay_uses_the_sql_broker_by_default(db: Engine, db_url: str) -> None:
    """`statesaga relay --once` with no broker URL relays into the database's own
    queues, where a consumer reads the event."""
    from click.testing import CliRunner

    from statesaga.cli import main

    broker = SqlBroker(db)
    ledger = Consumer(db, Ledger(), broker)
    ledger.subscribe()
    move_money(db, 1, 1)
    done = CliRunner().invoke(
        main, ["relay", "--db", db_url, "--once"], catch_exceptions=False, env={}
    )
    assert done.exit_code == 0, done.output
    assert "1 events published" in done.output
    assert ledger.drain() == 1


# -- any schedule of crashes ------------------------------------------------------------

LEASE = 10.0
#: One clock for every example, so that one example's leftovers have run out.
CLOCK = Clock()
CRASH_POINTS = ("none", "before commit", "after commit")


class Crashing:
    """A ``SqlBroker`` whose consumer side dies at planned points: the ``n``-th
    delivery given out crashes the consumer before its effects commit, after they
    commit (before the ack), or not at all."""

    def __init__(self, broker: SqlBroker, plan: list[str]) -> None:
        self.broker = broker
        self.plan = plan
        self.given = 0
        self.now = "none"

    def send(self, events: Any) -> int:
        return self.broker.send(events)

    def close(self) -> None:
        self.broker.close()

    def subscribe(self, queue: str, events: Any) -> Subscription:
        sub: Any = self.broker.subscribe(queue, events)
        get, ack = sub.get, sub.ack

        def planned_get(wait: float) -> Delivery | None:
            d = get(wait)
            if d is not None:
                self.now = self.plan[self.given] if self.given < len(self.plan) else "none"
                self.given += 1
            return d

        def planned_ack(delivery: Delivery) -> None:
            if self.now == "after commit":
                raise Crash()
            ack(delivery)

        sub.get, sub.ack = planned_get, planned_ack
        return sub  # type: ignore[no-any-return]


class Writer(Participant):
    """The ledger, dying before its commit when the broker's plan says so."""

    name = "writer"

    def __init__(self, broker: Crashing) -> None:
        self.broker = broker

    @handles("money.moved")
    def write(self, ctx: EventContext) -> None:
        ctx.connection.execute(
            effects.insert().values(key=ctx.event.key, seq=ctx.event.payload["seq"])
        )
        if self.broker.now == "before commit":
            raise Crash()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    batch=st.integers(1, 3),
    relay_dies=st.lists(st.booleans(), max_size=8),
    consumer_dies=st.lists(st.sampled_from(CRASH_POINTS), max_size=12),
)
def test_any_schedule_of_relay_and_consumer_crashes_has_each_effect_once_in_key_order(
    db: Engine, keys: list[int], batch: int, relay_dies: list[bool], consumer_dies: list[str]
) -> None:
    """Relay turns and consumer deliveries alternate; each relay turn may die after
    the broker committed, before marking published, and each delivery may kill its
    consumer before or after its effects commit. A dead one is replaced once its
    claim or hold has run out. At the end, every event's effect is written once,
    each key's in order, the outbox is published and the queue empty."""
    run = uuid.uuid4().hex[:8]
    queue = f"writer-{run}"
    with db.begin() as conn:
        seqs = itertools.count()
        for k in keys:
            Bank().publish(conn, "money.moved", {"seq": next(seqs)}, key=f"{run}-{k}")
    broker = Crashing(SqlBroker(db, lease=LEASE, clock=CLOCK), consumer_dies)
    turns = 0

    def consumer() -> Consumer:
        c = Consumer(db, Writer(broker), broker, queue=queue, clock=CLOCK)
        c.subscribe()
        return c

    def relay_turn() -> bool:
        nonlocal turns
        relay = Relay(db, broker, batch=batch, lease=LEASE, clock=CLOCK)
        if turns < len(relay_dies) and relay_dies[turns]:
            relay.store.published = crash  # type: ignore[method-assign]
        turns += 1
        try:
            return relay.turn() > 0
        except Crash:
            CLOCK.advance(LEASE + 1)  # its claim runs out
            return True

    reading = consumer()
    for _ in range(200):
        moved = relay_turn()
        try:
            moved = bool(reading._one(0)) or moved
        except Crash:  # the consumer died, holding its delivery
            CLOCK.advance(LEASE + 1)
            reading = consumer()
            moved = True
        if not moved:
            break
    else:
        raise AssertionError("the flow never settled")

    done = effect_rows(db, f"{run}-")
    assert sorted(done) == sorted((f"{run}-{k}", s) for s, k in enumerate(keys))
    assert in_key_order(done)
    assert broker.broker.depth(queue) == 0
    assert reading.inbox.store.pending() == 0


def test_a_consumer_waits_for_a_delivery_and_is_woken(db: Engine) -> None:
    """``get(wait)`` returns a delivery sent while it waits (woken on PostgreSQL,
    polling on SQLite), and ``None`` once the wait is over with nothing sent."""
    broker = SqlBroker(db, poll=0.05)
    sub = broker.subscribe("ledger", ["money.moved"])
    assert sub.get(0.05) is None
    sender = threading.Timer(
        0.1, lambda: broker.send([Event("late", "money.moved", "k", {"seq": 0})])
    )
    sender.start()
    try:
        got = sub.get(PATIENCE)
    finally:
        sender.join()
        sub.close()
    assert got is not None and got.event.id == "late"


def test_the_upgrade_to_version_7_adds_the_broker_tables(db_url: str) -> None:
    """The step from version 6 to 7 creates the bindings and deliveries tables on a
    database that has neither (a shared dev database made by an earlier statesaga),
    and the SQL broker works on the result."""
    from statesaga.store.migrations import MIGRATIONS
    from statesaga.store.schema import SCHEMA_VERSION

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE statesaga_deliveries")
            conn.exec_driver_sql("DROP TABLE statesaga_bindings")
        with engine.begin() as conn:
            MIGRATIONS[7](conn)
        assert SCHEMA_VERSION >= 7
        broker = SqlBroker(engine)
        sub = broker.subscribe("ledger", ["money.moved"])
        broker.send([Event("e", "money.moved", "k", {"seq": 0})])
        got = sub.get(0)
        assert got is not None and got.event.id == "e"
    finally:
        engine.dispose()
