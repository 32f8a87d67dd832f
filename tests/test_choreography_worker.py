"""The relay inside a worker: ``engine.worker(relay=broker)`` publishes the outbox that
its sagas (and anyone else) write, with the worker's lease length and clock, and stops
with the worker.

Waits are for a condition (the broker got the events, the thread ended), each bounded
by a generous limit that is never reached when all is well.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from statesaga import Saga, SagaEngine, StepContext, step
from statesaga.choreography import Event, MemoryBroker, publish

#: The bound on any one wait; never reached when all is well.
PATIENCE = 30.0


class Shipping(Saga):
    """One transactional step that announces the parcel with its transition."""

    name = "shipping"
    input_type = int

    @step(transactional=True)
    def ship(self, ctx: StepContext) -> None:
        assert ctx.connection is not None
        publish(ctx.connection, "parcel.shipped", {"n": ctx.input}, key=ctx.saga_id)


class Recording(MemoryBroker):
    """Remembers what it was sent, and says when it has ``expect`` events."""

    def __init__(self, expect: int) -> None:
        super().__init__()
        self.expect = expect
        self.sent: list[Event] = []
        self.got = threading.Event()

    def send(self, events: Sequence[Event]) -> int:
        self.sent.extend(events)
        if len(self.sent) >= self.expect:
            self.got.set()
        return super().send(events)


def test_a_worker_started_with_a_relay_publishes_the_outbox_and_stops_cleanly(
    db_url: str,
) -> None:
    """Sagas the worker runs publish in their transactional step; the worker's relay
    sends each event once, with the engine's lease length, and stops with the worker."""
    broker = Recording(expect=3)
    with SagaEngine(db_url, lease=12.0) as engine:
        engine.register(Shipping)
        worker = engine.worker(concurrency=2, relay=broker)
        relay = worker.relay
        assert relay is not None and relay.lease == 12.0
        worker.start()
        try:
            for n in range(3):
                engine.start(Shipping, n, saga_id=f"parcel-{n}")
            assert broker.got.wait(PATIENCE), "the worker's relay sent nothing"
        finally:
            worker.stop(grace=PATIENCE)
        assert relay._thread is not None
        relay._thread.join(PATIENCE)
        assert not relay._thread.is_alive()
        assert sorted(e.key or "" for e in broker.sent) == ["parcel-0", "parcel-1", "parcel-2"]
        assert relay.store.pending() == 0


def test_a_worker_drain_publishes_what_its_sagas_wrote(db_url: str) -> None:
    """``worker.drain()`` runs the sagas, then relays what they wrote to the outbox."""
    broker = Recording(expect=2)
    with SagaEngine(db_url) as engine:
        engine.register(Shipping)
        for n in range(2):
            engine.start(Shipping, n)
        report = engine.worker(relay=broker).drain()
        assert len(report.resumed) == 2
        assert [e.name for e in broker.sent] == ["parcel.shipped", "parcel.shipped"]


def test_a_worker_without_a_relay_leaves_the_outbox_alone(db_url: str) -> None:
    """No relay, no publishing: the events wait in the outbox for one."""
    with SagaEngine(db_url) as engine:
        engine.register(Shipping)
        engine.start(Shipping, 1)
        worker = engine.worker()
        assert worker.relay is None
        worker.drain()
        from statesaga.choreography import Relay

        assert Relay(engine, MemoryBroker()).store.pending() == 1
