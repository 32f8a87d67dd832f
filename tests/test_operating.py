"""Operator actions (issue #13): cancel, retry, resolve, pause and unpause, each a
fenced, logged transition of the saga's machine, and each refused when it makes
no sense."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from statesaga import (
    EntryStatus,
    OperatorRefused,
    Retry,
    Saga,
    SagaEngine,
    SagaStatus,
    Signal,
    StepContext,
    step,
    wait,
)
from statesaga.examples.order import OrderRequest, OrderSaga
from statesaga.examples.services import FakeServices
from statesaga.testing import check_saga


class Shop(Saga):
    """Reserve, then wait for payment, then ship; each step undone in reverse."""

    name = "shop"

    def __init__(self) -> None:
        self.done: list[str] = []
        self.gate = threading.Event()
        self.inside = threading.Event()
        self.refund_fails = 0

    @step
    def reserve(self, ctx: StepContext) -> str:
        self.done.append("reserve")
        if ctx.input == "slow":
            self.inside.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return "r-1"

    @reserve.compensate(retry=Retry(max_attempts=1))
    def release(self, ctx: StepContext, reservation: str) -> None:
        if self.refund_fails:
            self.refund_fails -= 1
            raise RuntimeError("inventory is down")
        self.done.append("release")

    @wait("paid", timeout=3600)
    def paid(self, ctx: StepContext, signal: Signal) -> str:
        self.done.append("paid")
        return "p-1"

    @step
    def ship(self, ctx: StepContext) -> str:
        self.done.append("ship")
        return "s-1"


@pytest.fixture
def shop() -> Shop:
    return Shop()


def engine_for(new_engine: Callable[..., SagaEngine], saga: Saga, **options: object) -> SagaEngine:
    engine = new_engine(**options)
    engine.register(saga)
    return engine


def test_cancel_a_waiting_saga_compensates_it(
    new_engine: Callable[..., SagaEngine], shop: Shop
) -> None:
    engine = engine_for(new_engine, shop)
    assert engine.run(shop, "x", saga_id="c-1").state == "paid"
    run = engine.cancel("c-1", "customer called", actor="alice")
    assert run.status is SagaStatus.FAILED
    assert run.error == "SagaCancelled: cancelled by alice: customer called"
    assert shop.done == ["reserve", "release"]
    history = engine.history("c-1")
    assert [(e.step, e.status) for e in history][-3:] == [
        ("paid", EntryStatus.CANCELLED),
        ("reserve", EntryStatus.COMPENSATING),
        ("reserve", EntryStatus.COMPENSATED),
    ]
    check_saga(Shop.spec, run.status, history)


def test_cancel_while_a_step_runs_records_the_step_then_compensates(
    new_engine: Callable[..., SagaEngine], shop: Shop
) -> None:
    """A worker is inside ``reserve`` when the operator cancels: the step's result
    is recorded, then the saga compensates it, instead of going on."""
    worker_engine = engine_for(new_engine, shop)
    operator = new_engine()  # another process: no definitions, no handlers
    worker_engine.start(shop, "slow", saga_id="c-2")
    with worker_engine.worker(concurrency=1):
        assert shop.inside.wait(30)
        operator.cancel("c-2", "fraud suspected", actor="bob")
        worker_engine._leases.renew()  # what the heartbeat does within a beat
        shop.gate.set()
        for _ in range(600):
            if worker_engine.get("c-2").status.is_terminal:
                break
            threading.Event().wait(0.05)
    run = worker_engine.get("c-2")
    assert run.status is SagaStatus.FAILED
    assert shop.done == ["reserve", "release"]
    statuses = [(e.step, e.status) for e in worker_engine.history("c-2")]
    assert ("reserve", EntryStatus.COMPLETED) in statuses
    assert ("paid", EntryStatus.CANCELLED) in statuses


def test_resolve_and_retry_a_saga_whose_compensation_failed(
    new_engine: Callable[..., SagaEngine], shop: Shop
) -> None:
    engine = engine_for(new_engine, shop)
    engine.run(shop, "x", saga_id="r-1")
    shop.refund_fails = 1
    assert engine.cancel("r-1", "stock gone").status is SagaStatus.COMPENSATION_FAILED
    # Retry after the inventory service is fixed: the compensations run again.
    run = engine.retry("r-1", actor="carol")
    assert run.status is SagaStatus.FAILED
    assert shop.done.count("release") == 1
    retried = [e for e in engine.history("r-1") if e.status is EntryStatus.RETRIED]
    assert [json.loads(json.dumps(e.result)) for e in retried] == [
        {"actor": "carol", "reason": None}
    ]
    check_saga(Shop.spec, SagaStatus.FAILED, engine.history("r-1"))

    engine.run(shop, "x", saga_id="r-2")
    shop.refund_fails = 1
    engine.cancel("r-2", "stock gone")
    run = engine.resolve("r-2", "refunded by phone", actor="dave")
    assert run.status is SagaStatus.RESOLVED
    last = engine.history("r-2")[-1]
    assert (last.status, last.result) == (
        EntryStatus.RESOLVED,
        {"actor": "dave", "reason": "refunded by phone"},
    )


def test_pause_and_unpause(new_engine: Callable[..., SagaEngine]) -> None:
    services = FakeServices()
    services.fail("payments.charge", times=1)
    engine = new_engine(clock=lambda: 1000.0)
    order = OrderSaga(services)
    engine.register(order)
    engine.start(order, OrderRequest("c", 1.0), saga_id="p-1")
    engine.pause("p-1", actor="erin", reason="investigating")
    # Nobody drives a paused saga.
    assert engine.recover().resumed == []
    assert engine.get("p-1").status is SagaStatus.STARTED
    history = engine.history("p-1")
    assert history[-1].status is EntryStatus.PAUSED
    run = engine.unpause("p-1", actor="erin")
    assert run.status is SagaStatus.COMPLETED
    statuses = [e.status for e in engine.history("p-1")]
    assert EntryStatus.UNPAUSED in statuses
    check_saga(OrderSaga.spec, SagaStatus.COMPLETED, engine.history("p-1"))


def test_actions_that_make_no_sense_are_refused(
    new_engine: Callable[..., SagaEngine], shop: Shop
) -> None:
    engine = engine_for(new_engine, shop)
    engine.run(shop, "x", saga_id="n-1")
    with pytest.raises(OperatorRefused, match="cannot resolve saga 'n-1': it is started"):
        engine.resolve("n-1", "no")
    with pytest.raises(OperatorRefused, match="cannot unpause saga 'n-1': it is not paused"):
        engine.unpause("n-1")
    with pytest.raises(OperatorRefused, match="cannot retry saga 'n-1': it waits for an event"):
        engine.retry("n-1")
    engine.signal("n-1", "paid", {})
    engine.recover()
    assert engine.get("n-1").status is SagaStatus.COMPLETED
    with pytest.raises(OperatorRefused, match="cannot cancel saga 'n-1': it is completed"):
        engine.cancel("n-1", "too late")
    with pytest.raises(OperatorRefused, match="cannot pause saga 'n-1': it is completed"):
        engine.pause("n-1")
    with pytest.raises(OperatorRefused, match="cannot retry saga 'n-1': it is completed"):
        engine.retry("n-1")


def test_the_machine_draws_the_operators_edges_apart() -> None:
    kinds = {(t.trigger, t.kind) for t in OrderSaga.machine.transitions}
    assert {("cancel", "cancel"), ("resolve", "resolve"), ("retry_compensations", "redo")} <= kinds
    from statesaga.diagrams import model_of, to_dot

    dot = to_dot(model_of(OrderSaga))
    assert "operator: resolve" in dot and "operator: retry" in dot
    # A cancel leads where a failure does: drawn over a saga that was cancelled.
    assert "operator: cancel" not in dot


def test_the_commands_act_through_the_real_executable(
    new_engine: Callable[..., SagaEngine], db_url: str, tmp_path: Path
) -> None:
    """`statesaga pause|unpause|resolve` on a saga, through the installed command."""
    engine = new_engine()
    order = OrderSaga()
    engine.register(order)
    engine.start(order, OrderRequest("c", 1.0), saga_id="cli-saga-1")

    def statesaga(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA")}
        return subprocess.run(
            [str(Path(sys.executable).with_name("statesaga")), *args, "--db", db_url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    paused = statesaga(
        "pause",
        "cli-saga",
        "--actor",
        "ops",
        "--reason",
        "look first",
        "--definitions",
        "statesaga.examples",
    )
    assert paused.returncode == 0, paused.stderr
    assert "pause cli-saga-1: now started" in paused.stdout
    assert engine.history("cli-saga-1")[-1].status is EntryStatus.PAUSED
    done = statesaga("unpause", "cli-saga-1", "--definitions", "statesaga.examples")
    assert done.returncode == 0, done.stderr
    assert "now completed" in done.stdout
    refused = statesaga("resolve", "cli-saga-1", "--reason", "x")
    assert refused.returncode == 5
    assert refused.stderr.strip().splitlines() == [
        "Error: cannot resolve saga 'cli-saga-1': it is completed, not compensation_failed"
    ]


def test_the_overlay_of_a_cancelled_saga_draws_the_cancel(
    new_engine: Callable[..., SagaEngine], shop: Shop
) -> None:
    from statesaga.diagrams import model_of, to_dot

    engine = engine_for(new_engine, shop)
    engine.run(shop, "x", saga_id="d-1")
    engine.cancel("d-1", "no stock", actor="ops")
    drawn = model_of(Shop).with_path(engine.history("d-1"), status="failed")
    assert [p.kind for p in drawn.path] == ["forward", "cancel", "finish"]
    assert "operator: cancel" in to_dot(drawn)


def test_list_filters_by_start_time_and_error_text(
    new_engine: Callable[..., SagaEngine], shop: Shop, db_url: str, tmp_path: Path
) -> None:
    """`engine.list` and `statesaga list` filter by when a saga started and by
    text in its error (what an operator looks for first)."""
    now = [1_000_000.0]
    engine = new_engine(clock=lambda: now[0])
    engine.register(shop)
    engine.run(shop, "x", saga_id="f-old")
    engine.cancel("f-old", "50% off_by_one")
    now[0] += 86_400
    engine.run(shop, "x", saga_id="f-new")
    ids = [s.saga_id for s in engine.list(started_after=now[0])]
    assert ids == ["f-new"]
    assert [s.saga_id for s in engine.list(started_before=now[0])] == ["f-old"]
    assert [s.saga_id for s in engine.list(error_contains="50% off_by")] == ["f-old"]
    assert engine.list(error_contains="50_ off") == []  # % and _ are plain text
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESAGA")}
    listed = subprocess.run(
        [
            str(Path(sys.executable).with_name("statesaga")),
            *("list", "--db", db_url, "--error", "off_by_one"),
            *("--since", "1970-01-12", "--json"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [s["saga_id"] for s in json.loads(listed.stdout)["sagas"]] == ["f-old"]
