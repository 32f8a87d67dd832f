"""Wait steps and signals (issue #12): a saga waits for the outside world,
holding no thread, and a signal — stored durably, deduplicated, kept when early —
makes it go on; a wait that times out compensates."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statesaga import (
    EntryStatus,
    Hooks,
    InvalidDefinition,
    Saga,
    SagaEngine,
    SagaNotFound,
    SagaStatus,
    Signal,
    SignalRefused,
    StepContext,
    step,
    wait,
)
from statesaga.testing import check_saga
from tests.conftest import empty_database


class Clock:
    """A clock the test moves by hand: no test waits for real time to pass."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Effects:
    def __init__(self) -> None:
        self.done: list[tuple[str, Any]] = []


def payment_saga(effects: Effects) -> type[Saga]:
    class Payment(Saga):
        """Charge, wait for the provider's confirmation (by payment id), ship."""

        name = "payment_wait"

        @step
        def charge(self, ctx: StepContext) -> str:
            effects.done.append(("charge", ctx.saga_id))
            return f"pay-{ctx.input}"

        @charge.compensate
        def refund(self, ctx: StepContext, payment_id: str) -> None:
            effects.done.append(("refund", payment_id))

        @wait("payment.confirmed", timeout=3600, key=lambda ctx: ctx.results["charge"])
        def confirmed(self, ctx: StepContext, signal: Signal) -> str:
            effects.done.append(("confirmed", signal.payload))
            return str(signal.payload["receipt"])

        @step
        def ship(self, ctx: StepContext) -> str:
            effects.done.append(("ship", ctx.results["confirmed"]))
            return "shipped"

    return Payment


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(new_engine: Callable[..., SagaEngine], clock: Clock, saga: Saga) -> SagaEngine:
    engine = new_engine(clock=clock, sleep=lambda _s: None)
    engine.register(saga)
    return engine


def test_a_saga_waits_survives_a_restart_and_resumes_on_the_signal(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    effects = Effects()
    saga = payment_saga(effects)()
    first = make(new_engine, clock, saga)
    run = first.run(saga, "o-1", saga_id="w-1")
    assert (run.status, run.state) == (SagaStatus.STARTED, "confirmed")
    assert first.history("w-1")[-1].status is EntryStatus.WAITING
    # Nothing is runnable while it waits: a recover drives nothing.
    assert first.recover().resumed == []
    first.close()  # every process goes away

    second = make(new_engine, clock, saga)
    receipt = second.signal("w-1", "payment.confirmed", {"receipt": "r-9"})
    assert receipt.stored and receipt.woken == ("w-1",)
    done = second.recover().resumed
    assert [r.status for r in done] == [SagaStatus.COMPLETED]
    assert effects.done == [
        ("charge", "w-1"),
        ("confirmed", {"receipt": "r-9"}),
        ("ship", "r-9"),
    ]
    check_saga(saga.spec, SagaStatus.COMPLETED, second.history("w-1"))


def test_a_claim_reads_parked_sagas_through_an_index_not_the_table(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    """However many sagas wait, a claim need not read them: each part of its query
    matches a partial index (the database's own plan uses them once the table's
    general indexes are out of the way: a planner picks among indexes by its
    statistics, which a test's few rows do not have), and of many parked sagas it
    takes only the one a signal woke."""
    effects = Effects()
    saga = payment_saga(effects)()
    engine = make(new_engine, clock, saga)
    for i in range(20):
        engine.run(saga, f"o-{i}", saga_id=f"w-{i}")
    engine.signal("w-7", "payment.confirmed", {"receipt": "r-7"})
    store = engine.store
    key = (saga.spec.name, saga.spec.version, saga.spec.fingerprint)
    with store.engine.connect() as conn:
        trial = conn.begin()  # rolled back: the indexes dropped here come back
        for index in ("incomplete", "name", "waiting"):
            conn.exec_driver_sql(f"DROP INDEX statesaga_sagas_{index}")
        sent: list[tuple[str, Any]] = []

        def capture(_c: Any, _cur: Any, statement: str, parameters: Any, *_a: Any) -> None:
            sent.append((statement, parameters))

        sa.event.listen(conn, "before_cursor_execute", capture)
        taken = store.claim("someone", clock() + 30, clock(), [key], limit=5, connection=conn)
        sa.event.remove(conn, "before_cursor_execute", capture)
        assert [r.saga_id for r in taken] == ["w-7"]
        ((sql, binds),) = sent  # the claim is one statement
        if store.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, binds))
        else:
            explained = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, binds)
            plan = "\n".join(r[-1] for r in explained)
        trial.rollback()
    assert "statesaga_sagas_wakeup" in plan and "statesaga_sagas_ready" in plan, plan
    assert "Seq Scan" not in plan and "SCAN statesaga_sagas\n" not in plan + "\n", plan
    done = engine.recover().resumed
    assert [(r.saga_id, r.status) for r in done] == [("w-7", SagaStatus.COMPLETED)]


def test_a_signal_that_comes_before_the_wait_is_kept(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    effects = Effects()
    saga = payment_saga(effects)()
    engine = make(new_engine, clock, saga)
    engine.start(saga, "o-2", saga_id="w-2")
    # By correlation key, before the saga even ran its first step.
    receipt = engine.signal_key("payment.confirmed", "pay-o-2", {"receipt": "early"})
    assert receipt.stored and receipt.woken == ()
    assert [p.key for p in engine.pending_signals()] == ["pay-o-2"]
    done = engine.recover().resumed
    assert [r.status for r in done] == [SagaStatus.COMPLETED]
    assert ("ship", "early") in effects.done
    assert engine.pending_signals() == []


def test_the_same_signal_twice_has_one_effect(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    effects = Effects()
    saga = payment_saga(effects)()
    engine = make(new_engine, clock, saga)
    engine.run(saga, "o-3", saga_id="w-3")
    first = engine.signal("w-3", "payment.confirmed", {"receipt": "a"}, event_id="evt-1")
    again = engine.signal("w-3", "payment.confirmed", {"receipt": "a"}, event_id="evt-1")
    assert (first.stored, again.stored) == (True, False)
    engine.recover()
    assert [e for e in effects.done if e[0] == "confirmed"] == [("confirmed", {"receipt": "a"})]
    assert engine.get("w-3").status is SagaStatus.COMPLETED


def test_a_wait_that_times_out_compensates(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    effects = Effects()
    saga = payment_saga(effects)()
    engine = make(new_engine, clock, saga)
    engine.run(saga, "o-4", saga_id="w-4")
    clock.now += 3599
    assert engine.recover().resumed == []  # not due yet
    clock.now += 2
    done = engine.recover().resumed
    assert [r.status for r in done] == [SagaStatus.FAILED]
    assert effects.done[-1] == ("refund", "pay-o-4")
    history = engine.history("w-4")
    assert [e.status for e in history if e.step == "confirmed"][-1] is EntryStatus.TIMED_OUT
    assert "payment.confirmed" in (engine.get("w-4").error or "")
    check_saga(saga.spec, SagaStatus.FAILED, history)
    # It waits for nothing now: a late signal is refused, not stored to be lost.
    with pytest.raises(SignalRefused, match="is failed"):
        engine.signal("w-4", "payment.confirmed", {"receipt": "late"})


def test_signals_nobody_would_consume_are_refused_with_the_reason(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    saga = payment_saga(Effects())()
    engine = make(new_engine, clock, saga)
    engine.run(saga, "o-5", saga_id="w-5")
    with pytest.raises(SagaNotFound):
        engine.signal("nobody", "payment.confirmed", {})
    with pytest.raises(SignalRefused, match=r"waits for no 'parcel\.lost'; its waits: payment"):
        engine.signal("w-5", "parcel.lost", {})
    with pytest.raises(SignalRefused, match=r"no registered saga waits for 'parcel\.lost' by key"):
        engine.signal_key("parcel.lost", "k", {})
    assert engine.pending_signals() == []


def test_wait_declarations_are_checked() -> None:
    with pytest.raises(InvalidDefinition, match="must take \\(self, ctx, signal\\)"):

        class NoSignal(Saga):
            @wait("e")
            def w(self, ctx: StepContext) -> None: ...

    with pytest.raises(InvalidDefinition, match="timeout must be > 0"):

        class BadTimeout(Saga):
            @wait("e", timeout=0)
            def w(self, ctx: StepContext, signal: Signal) -> None: ...

    class Fine(Saga):
        @wait("e", timeout=5)
        def w(self, ctx: StepContext, signal: Signal) -> None: ...

    kinds = {(t.trigger, t.kind) for t in Fine.machine.transitions}
    assert ("expire", "timeout") in kinds
    assert Fine.machine.state("w").wait == "e"


# -- the property: signal schedules x crash points -------------------------------


class Crash(BaseException):
    """A simulated crash (not an interruption the runner would log)."""


class CrashAt(Hooks):
    def __init__(self, n: int) -> None:
        self.left = n

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise Crash(point)


#: What the outside world does, in order: send the confirmation (by id or by key,
#: with an event id that may repeat), let time pass, or let workers run.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("signal"), st.sampled_from(["id", "key"]), st.sampled_from("ab")),
        st.tuples(st.just("time"), st.sampled_from([60.0, 4000.0]), st.just("")),
        st.tuples(st.just("recover"), st.just(""), st.just("")),
    ),
    max_size=6,
)


def play(
    url: str, clock: Clock, schedule: list[tuple[str, Any, str]], crash: int | None
) -> tuple[str, str]:
    """Run the payment saga through ``schedule``; with ``crash``, the process
    crashes at that commit point and a new one carries on."""
    effects = Effects()
    saga = payment_saga(effects)()
    saga_id = tag = uuid.uuid4().hex  # the input too: keys differ from run to run
    engines: list[SagaEngine] = []

    def engine() -> SagaEngine:
        if not engines:
            made = SagaEngine(url, clock=clock, sleep=lambda _s: None)
            made.register(saga)
            made.hooks = CrashAt(crash) if crash is not None else None
            engines.append(made)
        return engines[-1]

    def guarded(act: Callable[[SagaEngine], Any]) -> None:
        try:
            act(engine())
        except SignalRefused:
            pass  # the saga was past its wait: the sender was told so
        except Crash:
            engines.pop().close()  # the process died; the next one starts clean
            if engines == []:
                fresh = SagaEngine(url, clock=clock, sleep=lambda _s: None)
                fresh.register(saga)
                engines.append(fresh)
                # It restarts at once and takes over what was left (before any
                # time passes: a wait's timeout runs from when the saga reaches it).
                fresh.recover()

    try:
        guarded(lambda e: e.run(saga, tag, saga_id=saga_id))
        for what, how, which in schedule:
            if what == "signal":
                payload = {"receipt": which}
                if how == "id":
                    guarded(
                        lambda e, p=payload, w=which: e.signal(
                            saga_id, "payment.confirmed", p, event_id=w
                        )
                    )
                else:
                    guarded(
                        lambda e, p=payload, w=which: e.signal_key(
                            "payment.confirmed", f"pay-{tag}", p, event_id=f"{tag}-{w}"
                        )
                    )
            elif what == "time":
                clock.now += how
            else:
                guarded(lambda e: e.recover())
        # In the end, workers run and time passes until the wait gives up (if no
        # signal came): every run ends.
        for _ in range(4):
            guarded(lambda e: e.recover())
            clock.now += 4000
        final = engine().get(saga_id)
        check_saga(saga.spec, final.status, engine().history(saga_id))
        # A handler cut short by the crash runs again (at least once): its effect
        # counts once, as a service that drops duplicates by idempotency key would.
        done = list(dict.fromkeys(repr(e) for e in effects.done if e[0] != "charge"))
        return final.status.value, repr(done).replace(tag, "<tag>")
    finally:
        for e in engines:
            e.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schedule=actions, crash=st.integers(1, 12))
def test_signal_schedules_end_as_without_a_crash(
    tmp_path_factory: pytest.TempPathFactory, schedule: list[tuple[str, Any, str]], crash: int
) -> None:
    """For any schedule of signals (by id or key, repeated or not), time and worker
    runs, and any crash point: the saga ends as it does without the crash, with the
    same effects, each signal consumed at most once."""
    # Each run on a database of its own: recover() drives every saga it finds.
    with empty_database(tmp_path_factory) as url:
        expected = play(url, Clock(), schedule, None)
    with empty_database(tmp_path_factory) as url:
        assert play(url, Clock(), schedule, crash) == expected


def test_a_wait_is_drawn_with_its_event_and_its_timeout_edge() -> None:
    from statesaga.diagrams import model_of, to_dot, to_mermaid

    saga = payment_saga(Effects())
    model = model_of(saga)
    node = next(n for n in model.nodes if n.id == "confirmed")
    assert node.details[0] == "step 2 · waits for payment.confirmed · timeout 3600s"
    timeout = [(e.source, e.dest, e.label) for e in model.edges if e.kind == "timeout"]
    assert timeout == [("confirmed", "refund", "timed out")]
    dot = to_dot(model)
    assert "hexagon" in dot and "timed out" in dot
    assert '{{"<b>confirmed</b>' in to_mermaid(model)


def test_the_overlay_says_since_when_a_saga_waits(
    new_engine: Callable[..., SagaEngine], clock: Clock
) -> None:
    from statesaga.diagrams import model_of, to_dot, to_mermaid

    saga = payment_saga(Effects())()
    engine = make(new_engine, clock, saga)
    engine.run(saga, "o-6", saga_id="w-6")
    drawn = model_of(type(saga)).with_path(engine.history("w-6"), status="started")
    node = next(n for n in drawn.nodes if n.id == "confirmed")
    assert node.outcome == "waiting"
    assert node.outcome_text == "waiting since 1970-01-12 13:46:40 UTC"
    assert "waiting since" in to_dot(drawn) and "waiting since" in to_mermaid(drawn)
