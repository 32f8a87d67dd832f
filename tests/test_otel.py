"""Observability (issue #13): OpenTelemetry spans and metrics through
``statesaga.otel``, structured log records per transition, and nothing of
OpenTelemetry imported without it."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import statesaga.otel
from statesaga import Hooks, Retry, Saga, SagaEngine, SagaStatus, Signal, StepContext, step, wait
from statesaga.otel import Telemetry
from statesaga.testing import SimulatedCrash


class FlightsDown(Exception):
    """The flight service refuses: retried, then the saga compensates."""


class HotelBusy(Exception):
    """The hotel service is busy: its compensation is retried."""


class Seen:
    """What the handlers saw: the span current in each, by handler and attempt."""

    def __init__(self) -> None:
        self.spans: dict[tuple[str, int], trace.Span] = {}

    def note(self, handler: str, ctx: StepContext) -> None:
        self.spans[handler, ctx.attempt] = trace.get_current_span()


def trip_saga(seen: Seen) -> type[Saga]:
    class Trip(Saga):
        """Book a hotel (sync), then a flight (async) that fails twice: the hotel
        is cancelled, its cancellation failing once before it succeeds."""

        name = "otel_trip"

        @step
        def book_hotel(self, ctx: StepContext) -> str:
            seen.note("book_hotel", ctx)
            return "hotel-1"

        @book_hotel.compensate(retry=Retry(max_attempts=2, initial_delay=0.01))
        def cancel_hotel(self, ctx: StepContext, hotel: str) -> None:
            seen.note("cancel_hotel", ctx)
            if ctx.attempt == 1:
                raise HotelBusy("try again")

        @step(retry=Retry(max_attempts=2, initial_delay=0.01))
        async def book_flight(self, ctx: StepContext) -> str:
            seen.note("book_flight", ctx)
            raise FlightsDown(f"no seats (attempt {ctx.attempt})")

    return Trip


class Telemetered:
    """A ``Telemetry`` on an SDK tracer and meter that keep what they get."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.spans.get_finished_spans()

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
        """Each metric's points by their attributes: a sum's or gauge's value, a
        histogram's count."""
        data = self.reader.get_metrics_data()
        found: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        if isinstance(point, HistogramDataPoint):
                            points[key] = point.count
                        else:
                            assert isinstance(point, NumberDataPoint)
                            points[key] = point.value
        return found

    def close(self) -> None:
        self.telemetry.close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetered]:
    telemetered = Telemetered()
    yield telemetered
    telemetered.close()


def attrs_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_retry_and_a_compensation_as_spans(engine: SagaEngine, otel: Telemetered) -> None:
    """A saga run inside a caller's span is one ``saga`` span under it, and each
    attempt — the retried async step, the retried compensation — is a child span
    with the saga id, step, kind, attempt and outcome; handlers run inside their
    attempt's span, sync or async; failures are errors with their exceptions."""
    seen = Seen()
    Trip = trip_saga(seen)
    engine.register(Trip)
    otel.telemetry.instrument(engine)
    tracer = otel.tracer_provider.get_tracer("the-app")
    with tracer.start_as_current_span("POST /trips"):
        run = engine.run(Trip, None, saga_id="trip-1")
    assert run.status is SagaStatus.FAILED

    spans = otel.finished()
    request = next(s for s in spans if s.name == "POST /trips")
    saga = next(s for s in spans if s.name == "saga otel_trip")
    attempts = [
        s for s in spans if s.parent is not None and s.parent.span_id == saga.context.span_id
    ]
    assert [s.name for s in spans] == [
        "step book_hotel",
        "step book_flight",
        "step book_flight",
        "compensation cancel_hotel",
        "compensation cancel_hotel",
        "saga otel_trip",
        "POST /trips",
    ]
    # One trace: the request, the saga under it, the attempts under the saga.
    assert {s.context.trace_id for s in spans} == {request.context.trace_id}
    assert saga.parent is not None and saga.parent.span_id == request.context.span_id
    assert len(attempts) == 5
    assert attrs_of(saga) == {
        "statesaga.saga_id": "trip-1",
        "statesaga.saga": "otel_trip",
        "statesaga.version": 1,
        "statesaga.resumed": False,
        "statesaga.outcome": "failed",
    }
    assert saga.status.status_code is StatusCode.ERROR
    assert [
        (
            attrs_of(s)["statesaga.step"],
            attrs_of(s)["statesaga.kind"],
            attrs_of(s)["statesaga.attempt"],
            attrs_of(s)["statesaga.outcome"],
            s.status.status_code,
        )
        for s in attempts
    ] == [
        ("book_hotel", "step", 1, "succeed", StatusCode.UNSET),
        ("book_flight", "step", 1, "retry", StatusCode.ERROR),
        ("book_flight", "step", 2, "fail", StatusCode.ERROR),
        ("book_hotel", "compensation", 1, "retry", StatusCode.ERROR),
        ("book_hotel", "compensation", 2, "succeed", StatusCode.UNSET),
    ]
    assert all(attrs_of(s)["statesaga.saga_id"] == "trip-1" for s in attempts)
    assert attempts[2].status.description == "FlightsDown: no seats (attempt 2)"
    assert [e.attributes and e.attributes["exception.type"] for e in attempts[1].events] == [
        "tests.test_otel.FlightsDown"
    ]
    assert [e.attributes and e.attributes["statesaga.trigger"] for e in saga.events] == [
        "succeed",
        "retry",
        "fail",
        "retry",
        "succeed",
    ]
    # Each handler ran inside its own attempt's span: sync, async, compensation.
    by_attempt = {
        (
            s.name.split()[1],
            attrs_of(s)["statesaga.attempt"],
        ): s.context.span_id
        for s in attempts
    }
    assert {k: v.get_span_context().span_id for k, v in seen.spans.items()} == by_attempt


def test_async_handlers_on_the_callers_loop(engine: SagaEngine, otel: Telemetered) -> None:
    """Through ``arun`` the async step runs on the caller's own loop, still inside
    its attempt's span, and the saga span is under the caller's span."""
    seen = Seen()
    Trip = trip_saga(seen)
    engine.register(Trip)
    otel.telemetry.instrument(engine)
    tracer = otel.tracer_provider.get_tracer("the-app")

    async def handle() -> None:
        with tracer.start_as_current_span("POST /trips"):
            await engine.arun(Trip, None)

    asyncio.run(handle())
    spans = {(s.name, attrs_of(s).get("statesaga.attempt")): s for s in otel.finished()}
    request, saga = spans["POST /trips", None], spans["saga otel_trip", None]
    assert saga.parent is not None and saga.parent.span_id == request.context.span_id
    for attempt in (1, 2):
        flight = spans["step book_flight", attempt]
        assert seen.spans["book_flight", attempt].get_span_context() == flight.context


def test_metrics_of_a_retry_and_a_compensation(engine: SagaEngine, otel: Telemetered) -> None:
    """The same saga counts one start, one ``failed`` finish, a retry of the step
    and one of the compensation, one compensation done, and an attempt duration
    per attempt, by step, kind and outcome."""
    Trip = trip_saga(Seen())
    engine.register(Trip)
    otel.telemetry.instrument(engine)
    engine.run(Trip, None)
    found = otel.metrics()
    saga = ("statesaga.saga", "otel_trip")

    def at(**kw: str) -> frozenset[tuple[str, Any]]:
        return frozenset({saga, *((f"statesaga.{k}", v) for k, v in kw.items())})

    assert found["statesaga.sagas.started"] == {at(): 1}
    assert found["statesaga.sagas.finished"] == {at(status="failed"): 1}
    assert found["statesaga.step.retries"] == {
        at(step="book_flight", kind="step"): 1,
        at(step="book_hotel", kind="compensation"): 1,
    }
    assert found["statesaga.compensations"] == {at(step="book_hotel", outcome="succeed"): 1}
    assert found["statesaga.step.duration"] == {
        at(step="book_hotel", kind="step", outcome="succeed"): 1,
        at(step="book_flight", kind="step", outcome="retry"): 1,
        at(step="book_flight", kind="step", outcome="fail"): 1,
        at(step="book_hotel", kind="compensation", outcome="retry"): 1,
        at(step="book_hotel", kind="compensation", outcome="succeed"): 1,
    }


def approval_saga() -> type[Saga]:
    class Approval(Saga):
        """Wait for an approval, then act on it."""

        name = "otel_approval"

        @wait("approved")
        def approved(self, ctx: StepContext, signal: Signal) -> str:
            return str(signal.payload)

        @step
        def act(self, ctx: StepContext) -> str:
            return "done"

    return Approval


def slow_retry_saga() -> type[Saga]:
    class SlowRetry(Saga):
        """A step that fails once and retries an hour later."""

        name = "otel_slow_retry"

        @step(retry=Retry(max_attempts=2, initial_delay=3600))
        def flaky(self, ctx: StepContext) -> str:
            if ctx.attempt == 1:
                raise FlightsDown("later")
            return "ok"

    return SlowRetry


def test_waiting_and_parked_sagas(new_engine: Callable[..., SagaEngine], otel: Telemetered) -> None:
    """A saga at a wait step and one parked through a retry delay are counted by
    the gauges, from the database; each one's saga span ends when it is let go
    (``waiting``, ``parked``), and the waiting one, signalled and resumed, gets a
    new saga span marked resumed, in a trace of its own."""
    engine = new_engine()
    Approval, SlowRetry = approval_saga(), slow_retry_saga()
    engine.register(Approval)
    engine.register(SlowRetry)
    otel.telemetry.instrument(engine)
    assert engine.run(Approval, None, saga_id="a-1").status is SagaStatus.STARTED
    engine.start(SlowRetry, None, saga_id="s-1")
    engine.recover(wait=False)  # parks s-1 at its retry delay
    found = otel.metrics()
    assert found["statesaga.sagas.waiting"] == {frozenset({("statesaga.saga", "otel_approval")}): 1}
    assert found["statesaga.sagas.parked"] == {
        frozenset({("statesaga.saga", "otel_slow_retry")}): 1
    }
    let_go = {attrs_of(s)["statesaga.saga_id"]: s for s in otel.finished() if s.parent is None}
    assert {sid: attrs_of(s)["statesaga.outcome"] for sid, s in let_go.items()} == {
        "a-1": "waiting",
        "s-1": "parked",
    }

    engine.signal("a-1", "approved", "yes")
    assert engine.resume("a-1").status is SagaStatus.COMPLETED
    first, second = [s for s in otel.finished() if s.name == "saga otel_approval"]
    assert attrs_of(second)["statesaga.resumed"] is True
    assert attrs_of(second)["statesaga.outcome"] == "completed"
    assert second.context.trace_id != first.context.trace_id
    found = otel.metrics()
    assert found["statesaga.sagas.started"] == {
        frozenset({("statesaga.saga", "otel_approval")}): 1,
        frozenset({("statesaga.saga", "otel_slow_retry")}): 1,
    }
    assert found["statesaga.sagas.waiting"] == {frozenset({("statesaga.saga", "otel_approval")}): 0}


def test_one_log_record_per_transition(
    engine: SagaEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Each transition is one INFO record of the ``statesaga`` logger, its fields
    in the record: saga id, saga, step, from, to, trigger, attempt."""
    Trip = trip_saga(Seen())
    engine.register(Trip)
    with caplog.at_level(logging.INFO, logger="statesaga"):
        engine.run(Trip, None, saga_id="trip-log")
    records = [r for r in caplog.records if hasattr(r, "trigger")]
    fields = ("saga_id", "saga", "step", "from", "to", "trigger", "attempt")
    assert [tuple(getattr(r, f) for f in fields) for r in records] == [
        ("trip-log", "otel_trip", "book_hotel", "book_hotel", "book_flight", "succeed", 1),
        ("trip-log", "otel_trip", "book_flight", "book_flight", "book_flight", "retry", 1),
        ("trip-log", "otel_trip", "book_flight", "book_flight", "cancel_hotel", "fail", 2),
        ("trip-log", "otel_trip", "book_hotel", "cancel_hotel", "cancel_hotel", "retry", 1),
        ("trip-log", "otel_trip", "book_hotel", "cancel_hotel", "failed", "succeed", 2),
    ]
    assert all(r.levelno == logging.INFO and r.name == "statesaga" for r in records)
    assert (
        records[1].getMessage()
        == "otel_trip trip-log: book_flight --retry--> book_flight (attempt 1)"
    )


def test_no_log_record_when_info_is_off(
    engine: SagaEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """With the ``statesaga`` logger above INFO no transition record is made."""
    Trip = trip_saga(Seen())
    engine.register(Trip)
    with caplog.at_level(logging.WARNING, logger="statesaga"):
        engine.run(Trip, None)
    assert not [r for r in caplog.records if hasattr(r, "trigger")]


class Recording(Hooks):
    def __init__(self, name: str, trail: list[str]) -> None:
        self.name, self.trail = name, trail

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        self.trail.append(f"{self.name} in {state}")
        try:
            return fn(*args)
        finally:
            self.trail.append(f"{self.name} out {state}")


def test_observers_stay_around_the_hooks_slot(engine: SagaEngine) -> None:
    """``engine.observe`` adds observers that run, in order, around whatever
    ``engine.hooks`` holds; setting or clearing the slot (as the test toolkit does)
    leaves them in place, and reading it gives back what was set."""
    trail: list[str] = []
    Trip = trip_saga(Seen())
    engine.register(Trip)
    first, second, slot = (Recording(n, trail) for n in ("first", "second", "slot"))
    engine.observe(first)
    engine.hooks = slot
    engine.observe(second)
    assert engine.hooks is slot
    engine.run(Trip, None)
    assert trail[:6] == [
        "first in book_hotel",
        "second in book_hotel",
        "slot in book_hotel",
        "slot out book_hotel",
        "second out book_hotel",
        "first out book_hotel",
    ]
    engine.hooks = None
    assert engine.hooks is None
    trail.clear()
    engine.run(Trip, None)
    assert trail[:2] == ["first in book_hotel", "second in book_hotel"]


class Crasher(Hooks):
    """Hooks of the test toolkit's kind: fail ``book_flight``'s first attempt
    without calling it, crash at its second."""

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        if state == "book_flight":
            if attempt == 1:
                raise FlightsDown("injected")
            raise SimulatedCrash("crash")
        return fn(*args)


def test_spans_around_injected_faults(engine: SagaEngine, otel: Telemetered) -> None:
    """With fault-injecting hooks in the slot, an injected failure is a failed
    attempt to the telemetry, and a simulated crash ends the spans still open as
    ``interrupted``."""
    Trip = trip_saga(Seen())
    engine.register(Trip)
    otel.telemetry.instrument(engine)
    engine.hooks = Crasher()
    with pytest.raises(SimulatedCrash):
        engine.run(Trip, None)
    assert [
        (s.name, attrs_of(s).get("statesaga.attempt"), attrs_of(s)["statesaga.outcome"])
        for s in otel.finished()
    ] == [
        ("step book_hotel", 1, "succeed"),
        ("step book_flight", 1, "retry"),
        ("step book_flight", 2, "interrupted"),
        ("saga otel_trip", None, "interrupted"),
    ]


def test_nothing_of_opentelemetry_is_imported_without_it(db_url: str) -> None:
    """Running a saga with ``statesaga`` alone never imports ``opentelemetry``;
    ``statesaga.otel`` does, and says how to install it when it is missing."""
    code = textwrap.dedent(
        f"""
        import sys
        import statesaga
        from statesaga.examples.order import OrderRequest, OrderSaga
        engine = statesaga.SagaEngine({db_url!r})
        engine.register(OrderSaga)
        assert engine.run(OrderSaga, OrderRequest("c-1", 10.0)).status == "completed"
        engine.close()
        found = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not found, found
        sys.modules["opentelemetry"] = None  # as if it were not installed
        try:
            import statesaga.otel
        except ImportError as exc:
            assert "pip install 'statesaga[otel]'" in str(exc), exc
        else:
            raise AssertionError("statesaga.otel imported without opentelemetry")
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_public_names() -> None:
    """``statesaga.otel`` exports ``Telemetry`` alone, documented."""
    assert statesaga.otel.__all__ == ["Telemetry"]
    assert Telemetry.__doc__ and Telemetry.instrument.__doc__ and Telemetry.close.__doc__
