"""Choreography against a real RabbitMQ (127.0.0.1:5672, guest; ``STATESAGA_AMQP_URL``
to point elsewhere): the relay's publisher confirms, the consumers' manual
acknowledgements, RabbitMQ's redelivery of what a killed consumer had not
acknowledged, dead-lettering. Skipped, saying why, where no RabbitMQ answers;
with ``STATESAGA_REQUIRE_RABBITMQ=1`` (as ``.ci/run`` sets, having started one)
they fail instead.

Each test uses exchanges and queues of its own (a random prefix), deleted at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from definitions.choreography import Inventory, Orders, Payments, state_of
from statesaga import BrokerError
from statesaga.choreography import Consumer, RabbitMQ, Relay
from tests.choreography_child import (
    Bank,
    Fussy,
    Ledger,
    app_database,
    effect_rows,
    kill_after_commit,
)
from tests.seed_flow import THREE_ORDERS_END, run_three_orders

ROOT = Path(__file__).resolve().parents[1]
AMQP_URL = os.environ.get("STATESAGA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: A generous bound on any one wait for RabbitMQ or the child; never reached when all is well.
PATIENCE = 60.0


@pytest.fixture
def rabbit() -> Iterator[Callable[..., RabbitMQ]]:
    """Make RabbitMQ adapters sharing a prefix of this test's own; its exchanges
    and queues are deleted at the end. Skips if no RabbitMQ answers."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    made: list[RabbitMQ] = []
    probe = RabbitMQ(AMQP_URL, prefix=prefix, timeout=3)
    try:
        probe.send([])
        probe._publisher()
    except BrokerError as exc:
        if os.environ.get("STATESAGA_REQUIRE_RABBITMQ"):
            pytest.fail(f"no RabbitMQ answers at {probe.shown} ({exc}), which CI requires")
        pytest.skip(f"no RabbitMQ answers at {probe.shown} ({exc}); CI starts one")

    def make(**options: object) -> RabbitMQ:
        made.append(RabbitMQ(AMQP_URL, prefix=prefix, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    probe.delete(["ledger", "orders", "payments", "inventory", "fussy"])
    for broker in [probe, *made]:
        broker.close()


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """The test's database with statesaga's schema and the application's tables."""
    with app_database(db_url) as engine:
        yield engine


def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (a state RabbitMQ reaches by itself), bounded."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {PATIENCE}s for {what}")
        time.sleep(0.01)


def test_the_seeds_order_flow_runs_over_rabbitmq(
    db: Engine, rabbit: Callable[..., RabbitMQ]
) -> None:
    """Three orders (one paid and served, one declined, one out of stock) flow
    through the relay, RabbitMQ and the three participants' consumers, and end
    consistent; every event reaches the broker once and is processed once."""
    relay, consumers = run_three_orders(db, rabbit)
    assert state_of(db) == THREE_ORDERS_END
    names = sorted(e.name for e in relay.store.events())
    assert names.count("order.created") == 3 and names.count("order.cancelled") == 2
    assert relay.store.pending() == 0
    # Every event but the ends (order.confirmed, payment.refunded) is handled once.
    assert sum(c.processed for c in consumers) == len(names) - 2
    assert sum(c.duplicates for c in consumers) == 0


def test_a_rolled_back_transaction_sends_nothing(
    db: Engine, rabbit: Callable[..., RabbitMQ]
) -> None:
    """An event published in a transaction that rolls back never reaches RabbitMQ;
    one that commits reaches it once."""
    broker = rabbit()
    ledger = Consumer(db, Ledger(), broker)
    ledger.subscribe()
    relay = Relay(db, broker)
    with pytest.raises(ZeroDivisionError), db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 0}, key="k")
        _ = 1 / 0
    assert relay.drain() == 0
    assert broker.depth("ledger") == (0, 0)
    with db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 1}, key="k")
    assert relay.drain() == 1
    assert broker.depth("ledger") == (1, 0)
    assert ledger.drain() == 1
    assert effect_rows(db) == [("k", 1)]


def test_a_consumer_killed_between_commit_and_ack_loses_nothing_and_doubles_nothing(
    db: Engine, db_url: str, rabbit: Callable[..., RabbitMQ]
) -> None:
    """A consumer process commits the effects of its 5th delivery and is SIGKILLed
    before acknowledging it. RabbitMQ gives the delivery back; the next consumer
    drops it as a duplicate and processes the rest: every event's effect once,
    each key's in order."""
    broker = rabbit()
    Consumer(db, Ledger(), broker).subscribe()
    with db.begin() as conn:
        for seq in range(12):
            Bank().publish(conn, "money.moved", {"seq": seq}, key=f"k{seq % 3}")
    assert Relay(db, broker).drain() == 12

    paused = kill_after_commit(db_url, broker.prefix, 5, str(ROOT))

    assert len(effect_rows(db)) == 5  # the 5th's effects committed before the kill
    # RabbitMQ gives back the unacknowledged delivery once it sees the connection gone.
    wait_for(
        "the killed consumer's delivery to be requeued", lambda: broker.depth("ledger")[0] == 8
    )
    after = Consumer(db, Ledger(), broker)
    assert after.drain() == 7
    assert after.duplicates == 1
    done = effect_rows(db)
    assert sorted(done) == sorted((f"k{s % 3}", s) for s in range(12))
    for k in ("k0", "k1", "k2"):
        assert [s for key, s in done if key == k] == sorted(s for key, s in done if key == k)
    assert paused in after.inbox.processed()
    written = [e for e in after.inbox.store.events() if e.name == "ledger.written"]
    assert len(written) == 12 and len({e.cause for e in written}) == 12


def test_a_handler_that_keeps_failing_is_dead_lettered_and_the_queue_goes_on(
    db: Engine, rabbit: Callable[..., RabbitMQ]
) -> None:
    """A handler that raises for one event is tried max_attempts times (its
    transaction rolled back each time), then that event is dead-lettered into
    PREFIX.fussy.dead; the events after it are processed in order."""

    broker = rabbit()
    fussy = Consumer(db, Fussy(), broker, max_attempts=3)
    fussy.subscribe()
    with db.begin() as conn:
        for seq in range(3):
            Bank().publish(conn, "money.moved", {"seq": seq}, key=f"k{seq}")
    assert Relay(db, broker).drain() == 3
    assert fussy.drain() == 2
    assert len(fussy.dead) == 1
    assert effect_rows(db) == [("k0", 0), ("k2", 2)]
    conn = broker._connect()
    try:
        ok = conn.channel().queue_declare(f"{broker.prefix}.fussy.dead", passive=True)
        assert ok.method.message_count == 1
    finally:
        conn.close()


def test_relay_and_consumers_run_in_the_background(
    db: Engine, rabbit: Callable[..., RabbitMQ]
) -> None:
    """Started with start() (as beside engine.worker()), a relay and the three
    consumers carry orders placed afterwards to their ends, and stop when asked."""
    orders = Orders()
    consumers = [
        Consumer(db, p, rabbit(), poll=0.05)
        for p in (orders, Payments(frozenset({"broke"})), Inventory())
    ]
    for c in consumers:
        c.subscribe()
    relay = Relay(db, rabbit(), poll=0.05)
    with relay, consumers[0], consumers[1], consumers[2]:
        with db.begin() as conn:
            for n in range(10):
                orders.place(conn, f"o{n}", "broke" if n % 2 else "ann", float(n))

        def done() -> bool:
            return all(s != "pending" for s, _, _ in state_of(db).values())

        wait_for("every order to be confirmed or cancelled", done)
    final = state_of(db)
    assert all(final[f"o{n}"] == ("confirmed", "charged", True) for n in range(0, 10, 2))
    assert all(final[f"o{n}"] == ("cancelled", None, False) for n in range(1, 10, 2))


def test_an_unreachable_broker_is_a_clear_error_and_nothing_is_marked(db: Engine) -> None:
    """With no broker at the address, the relay raises BrokerError naming it, and the
    events stay in the outbox, unclaimed, for the next try."""
    with db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 0}, key="k")
    relay = Relay(db, RabbitMQ("amqp://guest:guest@127.0.0.1:1/%2F", timeout=2))
    with pytest.raises(BrokerError, match=r"127\.0\.0\.1:1.*cannot connect"):
        relay.drain()
    [row] = relay.store.events()
    assert row.published_at is None and row.claimed_by is None


def test_statesaga_relay_once_publishes_the_outbox(
    db: Engine, db_url: str, rabbit: Callable[..., RabbitMQ]
) -> None:
    """`statesaga relay --once` publishes what the outbox holds and exits 0; with no
    broker at the address it exits 1 with one line naming the broker, no password."""
    from click.testing import CliRunner

    from statesaga.cli import main

    broker = rabbit()
    ledger = Consumer(db, Ledger(), broker)
    ledger.subscribe()
    with db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 0}, key="k")
    args = ["relay", "--db", db_url, "--broker", AMQP_URL, "--prefix", broker.prefix, "--once"]
    done = CliRunner().invoke(main, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "1 events published" in done.output
    assert ledger.drain() == 1
    bad = CliRunner().invoke(main, [*args, "--broker", "amqp://guest:s3cret@127.0.0.1:1/%2F"])
    assert bad.exit_code == 1
    assert "message broker amqp://127.0.0.1:1/" in bad.output and "s3cret" not in bad.output
