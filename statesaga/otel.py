"""OpenTelemetry for sagas: a span per saga and per attempt, and their metrics.

Install with ``pip install 'statesaga[otel]'``. This module is the only one that
imports ``opentelemetry``; ``import statesaga`` never does. It is an observer
(``SagaEngine.observe``) built on the engine's ``Hooks``, so it sits around the
test toolkit's hooks rather than in their place::

    from statesaga.otel import Telemetry

    Telemetry(tracer_provider=..., meter_provider=...).instrument(engine)

Spans (names are low-cardinality; what varies is in the attributes):

- ``saga NAME``: one process's stretch of a saga, from the first attempt it
  makes to the saga's terminal state, or until it lets the saga go (a retry
  delay it parks through, a wait for a signal, an interruption). Its parent is
  the span current where that first attempt starts (the request that called
  ``engine.run``); in a worker it is a root. A saga resumed later, by this
  process or another, gets a new saga span with ``statesaga.resumed`` set:
  nothing of a span outlives its process, so every piece of one saga is found
  by ``statesaga.saga_id``, not by parenthood. Each transition is an event on it.
- ``step STEP`` / ``compensation NAME``: one attempt, a child of the saga span,
  from the handler's call to the transition that records its outcome. The
  handler runs inside it, sync or async, so ``trace.get_current_span()`` in a
  handler is its attempt, and instrumented clients it calls (HTTP, databases)
  make their spans its children: that is how the trace context reaches a handler
  beside ``ctx``. A handler's exception is recorded on it.

Attributes: ``statesaga.saga_id``, ``statesaga.saga``, ``statesaga.version``,
``statesaga.step`` (for a compensation: the step it undoes), ``statesaga.kind``
(``step`` or ``compensation``), ``statesaga.attempt``, ``statesaga.outcome``
(an attempt's trigger: ``succeed``, ``retry``, ``fail``, ``fail_in_doubt``,
``expire``, ``wait``, ``interrupted``, or ``abandoned``: its saga was lost to
another runner before its outcome was written; a saga span's terminal status,
or ``parked``, ``waiting``, ``interrupted``, ``released``).

Metrics (attributes in brackets): ``statesaga.sagas.started`` [saga],
``statesaga.sagas.finished`` [saga, status], ``statesaga.step.duration``
(seconds, histogram) [saga, step, kind, outcome], ``statesaga.step.retries``
[saga, step, kind], ``statesaga.compensations`` [saga, step, outcome], and two
gauges read from the database when the metrics are collected, so that they
count every process's sagas: ``statesaga.sagas.waiting`` (at a wait step) and
``statesaga.sagas.parked`` (waiting out a retry delay) [saga].
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("statesaga.otel needs OpenTelemetry: pip install 'statesaga[otel]'") from exc

import sqlalchemy as sa

from statesaga import __version__
from statesaga._errors import EngineClosed
from statesaga._handlers import Hooks, Transition
from statesaga._spec import SagaSpec
from statesaga._status import SagaStatus
from statesaga.store.schema import INCOMPLETE, sagas

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine
    from statesaga.store import SqlStore

__all__ = ["Telemetry"]

#: Terminal statuses a saga span reports as an error.
_FAILED = (SagaStatus.FAILED, SagaStatus.COMPENSATION_FAILED)


class _Open:
    """A saga this process is driving: its span, and the attempt in flight."""

    __slots__ = ("attempt", "attributes", "saga", "started", "state")

    def __init__(self, saga: Span, attributes: dict[str, Any]) -> None:
        self.saga = saga
        self.attributes = attributes  # the metrics' attributes of the attempt in flight
        self.attempt: Span | None = None
        self.state = ""  # the state of the attempt in flight
        self.started = 0.0


class Telemetry(Hooks):
    """Traces and measures the sagas of the engines it instruments.

    Args:
        tracer_provider: where spans go; default: OpenTelemetry's global one.
        meter_provider: where metrics go; default: OpenTelemetry's global one.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("statesaga", __version__, tracer_provider)
        meter = metrics.get_meter("statesaga", __version__, meter_provider)
        self._started = meter.create_counter(
            "statesaga.sagas.started", "{saga}", "Sagas that began their first step."
        )
        self._finished = meter.create_counter(
            "statesaga.sagas.finished", "{saga}", "Sagas that reached a terminal status."
        )
        self._duration = meter.create_histogram(
            "statesaga.step.duration",
            "s",
            "Attempts of steps and compensations, from the handler's call to the "
            "transition that records the outcome.",
        )
        self._retries = meter.create_counter(
            "statesaga.step.retries", "{retry}", "Failed attempts that will be retried."
        )
        self._compensations = meter.create_counter(
            "statesaga.compensations", "{compensation}", "Compensations done or failed for good."
        )
        meter.create_observable_gauge(
            "statesaga.sagas.waiting",
            [self._count_waiting],
            "{saga}",
            "Sagas at a wait step, waiting for a signal.",
        )
        meter.create_observable_gauge(
            "statesaga.sagas.parked",
            [self._count_parked],
            "{saga}",
            "Sagas waiting out a retry delay.",
        )
        self._stores: dict[str, SqlStore] = {}
        self._named: dict[str, set[str]] = {}  # the names each gauge has counted
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()

    def instrument(self, engine: SagaEngine) -> Telemetry:
        """Observe ``engine``'s sagas, and count the waiting and parked sagas in its
        database (once per database, however many engines share it).

        Returns:
            This telemetry, for chaining.
        """
        engine.observe(self)
        self._stores.setdefault(engine.store.url, engine.store)
        return self

    def close(self) -> None:
        """End the spans of the sagas still open here (let go by a stopping
        worker, or lost to another runner), as ``released``; call it when the
        engines it instruments close."""
        with self._lock:
            open_, self._open = list(self._open.values()), {}
        for saga in open_:
            self._end(saga, "released")

    # -- hooks ------------------------------------------------------------------

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Start the attempt's span (and the saga's, at its first attempt here) and
        run the handler inside it."""
        definition = args[0]  # the saga instance: (saga, ctx, ...)
        spec = definition.spec
        info = definition.machine.state(state)
        with self._lock:
            saga = self._open.get(saga_id)
        if saga is None:
            saga = self._begin(saga_id, spec, state, attempt)
        elif saga.attempt is not None:  # its transition was never seen: lost, then taken again
            self._finish_attempt(saga, "abandoned", None)
        attributes: dict[str, Any] = {
            "statesaga.saga_id": saga_id,
            "statesaga.saga": spec.name,
            "statesaga.step": info.step,
            "statesaga.kind": info.kind,
            "statesaga.attempt": attempt,
        }
        span = self._tracer.start_span(
            f"{info.kind} {state}", trace.set_span_in_context(saga.saga), attributes=attributes
        )
        saga.attempt, saga.state, saga.started = span, state, time.monotonic()
        saga.attributes = {k: attributes[k] for k in _METRIC_KEYS}
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                result = fn(*args)
        except Exception as exc:
            span.record_exception(exc)
            raise
        except BaseException as exc:  # a crash, Ctrl-C: no transition will come
            self._interrupted(saga_id, exc)
            raise
        if inspect.isawaitable(result):
            return _inside(span, result)
        return result

    def transition(self, transition: Transition) -> None:
        """End the attempt's span with its outcome, count it, and end the saga's
        span when it finishes or this process lets it go."""
        t = transition
        with self._lock:
            saga = self._open.get(t.saga_id)
        if saga is None:  # no handler ran here first (a wait parked, a deadline had passed)
            saga = self._begin(t.saga_id, t.spec, t.source, t.attempt)
        saga.saga.add_event(
            "transition",
            {
                "statesaga.from": t.source,
                "statesaga.to": t.dest,
                "statesaga.trigger": t.trigger,
                "statesaga.attempt": t.attempt,
            },
        )
        if saga.attempt is not None and saga.state == t.source:
            self._finish_attempt(saga, t.trigger, t.error)
        names = {"statesaga.saga": t.spec.name, "statesaga.step": t.step}
        if t.trigger == "retry":
            self._retries.add(1, {**names, "statesaga.kind": t.kind})
        elif t.kind == "compensation" and t.trigger in ("succeed", "fail"):
            self._compensations.add(1, {**names, "statesaga.outcome": t.trigger})
        if t.status.is_terminal:
            self._finished.add(
                1, {"statesaga.saga": t.spec.name, "statesaga.status": str(t.status)}
            )
            error = f"the saga ended {t.status}" if t.status in _FAILED else None
            self._forget(t.saga_id)
            self._end(saga, str(t.status), error)
        elif t.parked:
            self._forget(t.saga_id)
            self._end(saga, "waiting" if t.trigger == "wait" else "parked")

    # -- spans ------------------------------------------------------------------

    def _begin(self, saga_id: str, spec: SagaSpec, state: str, attempt: int) -> _Open:
        """Open the saga's span at its first attempt here (in the caller's context);
        count the saga as started if that is its first attempt at all."""
        fresh = state == spec.steps[0].name and attempt <= 1
        if fresh:
            self._started.add(1, {"statesaga.saga": spec.name})
        span = self._tracer.start_span(
            f"saga {spec.name}",
            attributes={
                "statesaga.saga_id": saga_id,
                "statesaga.saga": spec.name,
                "statesaga.version": spec.version,
                "statesaga.resumed": not fresh,
            },
        )
        saga = _Open(span, {})
        with self._lock:
            self._open[saga_id] = saga
        return saga

    def _forget(self, saga_id: str) -> None:
        with self._lock:
            self._open.pop(saga_id, None)

    def _finish_attempt(self, saga: _Open, outcome: str, error: str | None) -> None:
        span, saga.attempt = saga.attempt, None
        if span is None:
            return
        span.set_attribute("statesaga.outcome", outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        self._duration.record(
            time.monotonic() - saga.started, {**saga.attributes, "statesaga.outcome": outcome}
        )

    def _end(self, saga: _Open, outcome: str, error: str | None = None) -> None:
        self._finish_attempt(saga, outcome, error)
        saga.saga.set_attribute("statesaga.outcome", outcome)
        if error is not None:
            saga.saga.set_status(Status(StatusCode.ERROR, error))
        saga.saga.end()

    def _interrupted(self, saga_id: str, exc: BaseException) -> None:
        with self._lock:
            saga = self._open.pop(saga_id, None)
        if saga is not None:
            if saga.attempt is not None:
                saga.attempt.record_exception(exc)
            self._end(saga, "interrupted", f"{type(exc).__name__}: {exc}")

    # -- gauges -----------------------------------------------------------------

    def _count_waiting(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._count("waiting", sagas.c.waiting_for.is_not(None))

    def _count_parked(self, _options: CallbackOptions) -> Iterable[Observation]:
        where = sa.and_(sagas.c.waiting_for.is_(None), sagas.c.due_at.is_not(None))
        return self._count("parked", where)

    def _count(self, gauge: str, where: Any) -> list[Observation]:
        """Incomplete sagas matching ``where`` by definition name, in every database
        instrumented; a name counted before and matched by none now reports 0."""
        counts = dict.fromkeys(self._named.setdefault(gauge, set()), 0)
        query = (
            sa.select(sagas.c.name, sa.func.count())
            .where(sagas.c.status.in_(INCOMPLETE), where)
            .group_by(sagas.c.name)
        )
        for store in list(self._stores.values()):
            with contextlib.suppress(EngineClosed), store._reading() as conn:
                for name, count in conn.execute(query):
                    counts[name] = counts.get(name, 0) + int(count)
        self._named[gauge].update(counts)
        return [Observation(n, {"statesaga.saga": name}) for name, n in sorted(counts.items())]


#: The attempt's attributes its duration is measured by (not the saga id: too many).
_METRIC_KEYS = ("statesaga.saga", "statesaga.step", "statesaga.kind")


async def _inside(span: Span, pending: Awaitable[Any]) -> Any:
    """Await an async handler inside its attempt's span (on the loop it runs on)."""
    with trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            return await pending
        except Exception as exc:
            span.record_exception(exc)
            raise
