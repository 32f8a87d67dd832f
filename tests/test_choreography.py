"""Choreography through the public API: declarations checked, the outbox written with
the transaction that caused it (and only then), each key's events relayed in order,
and each event's effects once however often it is delivered.

These tests carry events in the process (``MemoryBroker``), so that every
redelivery schedule and failure plan can be tried quickly (the failure plans
also through the database's own queues, ``SqlBroker``);
``test_choreography_sql.py`` tests that broker's crash safety, and
``test_choreography_rabbitmq.py`` runs the same parts against a real RabbitMQ.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from definitions.choreography import Inventory, Orders, Payments, state_of
from statesaga import (
    InvalidEvent,
    InvalidParticipant,
    Saga,
    SagaEngine,
    SagaStatus,
    StepContext,
    step,
)
from statesaga.choreography import (
    Broker,
    Consumer,
    Event,
    EventContext,
    Inbox,
    MemoryBroker,
    Participant,
    Relay,
    Subscription,
    handles,
    publish,
)
from statesaga.choreography.sql import SqlBroker
from statesaga.store import make_engine
from statesaga.store.migrations import upgrade
from statesaga.store.schema import SCHEMA_VERSION
from tests.choreography_child import Bank, Ledger, app_database, effect_rows


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """An SQLAlchemy engine on the test's database, with statesaga's schema and the
    application's table."""
    with app_database(db_url) as engine:
        yield engine


# -- declarations ---------------------------------------------------------------------


def test_a_participant_declares_its_handlers() -> None:
    """A participant's handlers are read off its class, by the event each handles,
    with what each may emit; a subclass may override a handler."""
    assert list(Payments.handlers) == ["order.cancelled", "order.created"]
    charge = Payments.handlers["order.created"]
    assert charge.method == "charge"
    assert charge.emits == ("payment.charged",)
    assert charge.failures == ("payment.failed",)
    assert Payments.handlers["order.cancelled"].compensates

    class Louder(Ledger):
        @handles("money.moved", emits=["ledger.written", "ledger.shouted"])
        def shout(self, ctx: EventContext) -> None: ...

    assert Louder.name == "ledger"
    assert Louder.handlers["money.moved"].method == "shout"
    assert Louder.handlers["money.moved"].may_publish == ("ledger.written", "ledger.shouted")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "its name must be a string"),
        ({"name": "a b"}, "its name must be a string"),
        ({"name": "p", "emits": "x.y"}, "emits must be a tuple"),
        ({"name": "p", "emits": ("no*wildcards",)}, r"'no\*wildcards' is not an event name"),
        (
            {"name": "p", "h": handles("a.b", emits=["c..d"])(lambda self, ctx: None)},
            "'c..d' is not an event name",
        ),
        ({"name": "p", "h": handles("a.b")(lambda self: None)}, "handler h must be a method"),
        (
            {
                "name": "p",
                "h": handles("a.b")(lambda self, ctx: None),
                "i": handles("a.b")(lambda self, ctx: None),
            },
            "h and i both handle 'a.b'",
        ),
    ],
)
def test_a_malformed_participant_fails_when_its_class_is_made(
    body: dict[str, Any], problem: str
) -> None:
    """Each malformed declaration raises InvalidParticipant at class creation,
    naming the class and the problem."""
    with pytest.raises(InvalidParticipant, match=problem) as caught:
        type("Broken", (Participant,), body)
    assert caught.value.participant == "Broken"


def test_publishing_an_undeclared_or_malformed_event_is_refused(db: Engine) -> None:
    """A participant publishes only what it declares, a handler only what its
    @handles declares; a bad name, key or payload is refused; nothing is written."""
    inbox = Inbox(db, Ledger())
    with db.begin() as conn:
        with pytest.raises(InvalidEvent, match="does not declare that it emits it"):
            Bank().publish(conn, "ledger.written", {})
        with pytest.raises(InvalidEvent, match="not plain JSON"):
            Bank().publish(conn, "money.moved", {"at": object()})
        with pytest.raises(InvalidEvent, match="its key must be"):
            Bank().publish(conn, "money.moved", {}, key="")
        with pytest.raises(InvalidEvent, match="not an event name"):
            publish(conn, "a b", {})

    class Sloppy(Participant):
        name = "sloppy"

        @handles("money.moved", emits=["ledger.written"])
        def write(self, ctx: EventContext) -> None:
            ctx.publish("something.else")

    with pytest.raises(InvalidEvent, match=r"sloppy.write does not declare .* ledger.written"):
        Inbox(db, Sloppy()).deliver(Event("e1", "money.moved", "k", {"seq": 0}))
    assert inbox.store.events() == []
    assert Inbox(db, Sloppy()).processed() == []


# -- the outbox -------------------------------------------------------------------------


def test_an_event_is_published_only_if_its_transaction_commits(db: Engine) -> None:
    """An event published in a transaction that rolls back is never written, so
    the relay sends nothing; one that commits is sent once and marked published."""
    broker = MemoryBroker()
    sub = broker.subscribe("watch", ["money.moved"])
    relay = Relay(db, broker)
    with pytest.raises(RuntimeError), db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 0}, key="k")
        raise RuntimeError("the state change failed")
    assert relay.store.events() == []
    assert relay.drain() == 0
    assert sub.get(0) is None

    with db.begin() as conn:
        sent = Bank().publish(conn, "money.moved", {"seq": 1}, key="k")
    assert relay.drain() == 1
    got = sub.get(0)
    # (Its position is the outbox's: PostgreSQL does not give back the rolled-back one.)
    assert got is not None and attrs.evolve(got.event, position=None) == sent
    assert relay.store.pending() == 0
    assert relay.drain() == 0


def test_a_failing_handler_publishes_nothing_and_records_nothing(db: Engine) -> None:
    """A handler that raises after writing and publishing rolls all of it back:
    no effect, no outbox row, no inbox record; the next delivery runs it again."""
    calls = []

    class Flaky(Participant):
        name = "flaky"

        @handles("money.moved", emits=["ledger.written"])
        def write(self, ctx: EventContext) -> None:
            calls.append(ctx.event.id)
            Ledger.write(Ledger(), ctx)  # type: ignore[arg-type]
            if len(calls) == 1:
                raise ConnectionError("the disk went away")

    inbox = Inbox(db, Flaky())
    event = Event("e1", "money.moved", "k", {"seq": 7})
    with pytest.raises(ConnectionError):
        inbox.deliver(event)
    assert effect_rows(db) == [] and inbox.store.events() == [] and inbox.processed() == []
    assert inbox.deliver(event) is True
    assert inbox.deliver(event) is False
    assert effect_rows(db) == [("k", 7)]
    assert [e.name for e in inbox.store.events()] == ["ledger.written"]


def test_a_transactional_saga_step_publishes_with_its_transition(db_url: str) -> None:
    """An orchestrated saga's transactional step publishes through ctx.connection:
    the event is written with the step's completion, and not if the step fails."""

    class Shipping(Saga):
        name = "shipping"
        input_type = int

        @step(transactional=True)
        def ship(self, ctx: StepContext) -> None:
            assert ctx.connection is not None
            publish(ctx.connection, "parcel.shipped", {"n": ctx.input}, key=ctx.saga_id)
            if ctx.input < 0:
                raise ValueError("no such parcel")

    with SagaEngine(db_url) as engine:
        engine.register(Shipping)
        assert engine.run(Shipping, 1, saga_id="good").status is SagaStatus.COMPLETED
        assert engine.run(Shipping, -1, saga_id="bad").status is SagaStatus.FAILED
        relay = Relay(engine, MemoryBroker())
        assert [(e.name, e.key) for e in relay.store.events()] == [("parcel.shipped", "good")]


def test_one_keys_events_are_relayed_in_order_and_never_two_at_once(db: Engine) -> None:
    """A relay claims only the first unpublished event of each key: a second relay
    finds nothing of that key while the first holds it, and the key's next event
    only once the first is confirmed. Keys go out side by side."""
    with db.begin() as conn:
        for seq, key in enumerate(["a", "a", "b", "a", "b"]):
            Bank().publish(conn, "money.moved", {"seq": seq}, key=key)
    one, two = Relay(db, MemoryBroker()), Relay(db, MemoryBroker())
    first = one.store.claim(one.owner, 1e12, 0.0, 10)
    assert [(r.key, r.position) for r in first] == [("a", 1), ("b", 3)]
    assert two.store.claim(two.owner, 1e12, 0.0, 10) == []
    assert one.store.published(one.owner, first[:1], 1.0) == 1
    assert [(r.key, r.position) for r in two.store.claim(two.owner, 1e12, 0.0, 10)] == [("a", 2)]
    # A claim whose lease ran out is taken over, and the old holder's mark is fenced off.
    later = two.store.claim(two.owner, 1e12, 2e12, 10)
    assert [(r.key, r.position) for r in later] == [("a", 2), ("b", 3)]
    assert one.store.published(one.owner, first[1:], 3.0) == 0
    assert two.store.published(two.owner, later, 3.0) == 2


# -- redelivery: any schedule, effects once and in order -------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Events of up to three keys, each key's in order; a delivery schedule in which
    every event is delivered 1-3 times, the first deliveries of a key in its order
    (as the relay sends them), every redelivery at any later point."""
    counts = {k: draw(st.integers(1, 4)) for k in draw(st.sets(st.sampled_from("xyz"), min_size=1))}
    copies = {(k, i): draw(st.integers(1, 3)) for k, n in counts.items() for i in range(n)}
    sent = {k: 0 for k in counts}
    pending: list[tuple[str, int]] = []  # delivered once, copies left
    left = dict(copies)
    schedule: list[tuple[str, int]] = []
    while any(sent[k] < n for k, n in counts.items()) or pending:
        fresh = [k for k, n in counts.items() if sent[k] < n]
        options = [("new", k) for k in fresh] + [("again", p) for p in pending]
        kind, what = draw(st.sampled_from(options))
        if kind == "new":
            assert isinstance(what, str)
            item = (what, sent[what])
            sent[what] += 1
        else:
            assert isinstance(what, tuple)
            item = what
        schedule.append(item)
        left[item] -= 1
        if item not in pending and left[item]:
            pending.append(item)
        if not left[item] and item in pending:
            pending.remove(item)
    return counts, schedule


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=schedules())
def test_any_redelivery_schedule_has_each_effect_once_in_key_order(
    db: Engine, plan: tuple[dict[str, int], list[tuple[str, int]]]
) -> None:
    """Whichever events are delivered 1-3 times, and wherever the redeliveries
    fall: each event's effect happens once, each key's effects in the key's
    order, and each event's own emitted event is written once. (Each example has
    keys and ids of its own in the one database.)"""
    counts, schedule = plan
    run = uuid.uuid4().hex[:8]
    ids = {(k, i): f"{run}-{k}-{i}" for k, n in counts.items() for i in range(n)}
    inbox = Inbox(db, Ledger())
    ran = [
        inbox.deliver(Event(ids[item], "money.moved", f"{run}-{item[0]}", {"seq": item[1]}))
        for item in schedule
    ]
    assert sum(ran) == len(ids)
    done = effect_rows(db, prefix=run)
    assert sorted(done) == sorted((f"{run}-{k}", i) for k, i in ids)
    for key in counts:
        assert [s for k, s in done if k == f"{run}-{key}"] == list(range(counts[key]))
    mine = set(ids.values())
    causes = [e.cause for e in inbox.store.events() if e.cause in mine]
    assert sorted(causes) == sorted(mine)
    assert sorted(mine & set(inbox.processed())) == sorted(mine)


# -- the seed's example: consistent for every failure plan -----------------------------

HANDLERS = [
    ("orders", "confirm"),
    ("orders", "cancel_unpaid"),
    ("orders", "cancel_unreserved"),
    ("payments", "charge"),
    ("payments", "refund"),
    ("inventory", "reserve"),
]
#: (payment declined, out of stock, handler that fails once, every message twice)
PLANS = list(itertools.product([False, True], [False, True], [None, *HANDLERS], [False, True]))


class Twice:
    """Has ``broker`` deliver every event of the keys in ``twice`` two times."""

    def __init__(self, broker: Broker, twice: set[str]) -> None:
        self.broker = broker
        self.twice = twice

    def send(self, events: Any) -> int:
        for e in events:
            self.broker.send([e, e] if e.key in self.twice else [e])
        return len(events)

    def subscribe(self, queue: str, events: Any) -> Subscription:
        return self.broker.subscribe(queue, events)

    def close(self) -> None:
        self.broker.close()


@pytest.mark.parametrize("kind", ["memory", "sql"])
def test_the_seeds_order_flow_ends_consistent_for_every_failure_plan(db: Engine, kind: str) -> None:
    """Each plan is one order: its payment declined or not, its stock missing or not,
    one handler failing once (rolled back, tried again) or none, every message
    delivered twice or once; all plans run side by side in one database, through
    the broker in the process or the one in the database. Every order ends
    confirmed-charged-reserved or cancelled with no charge and no stock held, the
    outcome its plan calls for; and no handler's effect or event is doubled."""
    failing: dict[tuple[str, str], set[str]] = {h: set() for h in HANDLERS}
    declined, missing, twice = set(), set(), set()
    for n, (decline, short, fail, dup) in enumerate(PLANS):
        order = f"o{n}"
        if decline:
            declined.add(f"c{n}")
        if short:
            missing.add(order)
        if fail:
            failing[fail].add(order)
        if dup:
            twice.add(order)

    def failing_once(participant: Participant) -> Participant:
        for spec in participant.handlers.values():
            handler = getattr(participant, spec.method)
            todo = set(failing[(participant.name, spec.method)])

            def wrapped(ctx: EventContext, handler: Any = handler, todo: set[str] = todo) -> None:
                handler(ctx)
                if ctx.event.key in todo:
                    todo.discard(ctx.event.key)
                    raise TimeoutError(f"{ctx.event.name}: the handler's process stalled")

            setattr(participant, spec.method, wrapped)
        return participant

    orders = Orders()
    broker = Twice(MemoryBroker() if kind == "memory" else SqlBroker(db), twice)
    parts = [
        failing_once(p)
        for p in (orders, Payments(frozenset(declined)), Inventory(frozenset(missing)))
    ]
    consumers = [Consumer(db, p, broker) for p in parts]
    for c in consumers:
        c.subscribe()
    relay = Relay(db, broker, batch=7)
    with db.begin() as conn:
        for n in range(len(PLANS)):
            orders.place(conn, f"o{n}", f"c{n}", 10.0 + n)
    while relay.drain() + sum(c.drain() for c in consumers):
        pass

    assert all(not c.dead for c in consumers)
    final = state_of(db)
    for n, (decline, short, _fail, _dup) in enumerate(PLANS):
        if decline:
            expected = ("cancelled", None, False)
        elif short:
            expected = ("cancelled", "refunded", False)
        else:
            expected = ("confirmed", "charged", True)
        assert final[f"o{n}"] == expected, PLANS[n]
    # Each event caused at most what its handler declares, once: no event is doubled.
    events = relay.store.events()
    caused = [(e.cause, e.name) for e in events if e.cause]
    assert len(caused) == len(set(caused))
    assert relay.store.pending() == 0
    assert sum(c.duplicates for c in consumers) > 0  # the plans did redeliver


def test_the_upgrade_to_version_3_adds_the_outbox(db_url: str) -> None:
    """The step from version 2 to 3 creates the outbox and the inbox on a database
    that has neither (alone: later versions' steps change other tables), and
    choreography works on the result."""
    from statesaga.store.migrations import MIGRATIONS

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE statesaga_outbox")
            conn.exec_driver_sql("DROP TABLE statesaga_inbox")
        with engine.begin() as conn:
            MIGRATIONS[3](conn)
        assert SCHEMA_VERSION >= 3
        with engine.begin() as conn:
            Bank().publish(conn, "money.moved", {"seq": 0}, key="k")
        assert Relay(engine, MemoryBroker()).drain() == 1
    finally:
        engine.dispose()


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's choreography example runs as written (in a folder of its own)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "Relay(db" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    namespace["db"].dispose()  # type: ignore[attr-defined]


def test_statesaga_relay_prune_deletes_only_published_events(db: Engine, db_url: str) -> None:
    """`statesaga relay --prune DAYS` deletes the events published more than DAYS ago
    and exits without a broker; unpublished events and the inboxes stay."""
    from click.testing import CliRunner

    from statesaga.cli import main

    with db.begin() as conn:
        for seq in range(2):
            Bank().publish(conn, "money.moved", {"seq": seq}, key="k")
    relay = Relay(db, MemoryBroker())
    assert relay.drain() == 2
    with db.begin() as conn:
        Bank().publish(conn, "money.moved", {"seq": 2}, key="k")
    args = ["relay", "--db", db_url, "--prune"]
    kept = CliRunner().invoke(main, [*args, "1"], catch_exceptions=False)
    assert kept.exit_code == 0 and "pruned 0 events" in kept.output
    done = CliRunner().invoke(main, [*args, "0"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "pruned 2 events published more than 0 days ago" in done.output
    assert [e.payload for e in relay.store.events()] == ['{"seq":2}']
