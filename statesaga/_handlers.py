"""Where a saga's handlers are called: their context, their loop, their timeouts.

``Handlers.call`` is the one place a step's or compensation's handler runs,
sync or async, within its timeout and under the saga's lease; ``Hooks`` are
the points where tests inject faults and applications trace. An engine has one
``hooks`` slot (the test toolkit's) and any number of observers
(``SagaEngine.observe``: ``statesaga.otel``'s), which ``Observed`` runs around
what the slot holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from sqlalchemy.engine import Connection

from statesaga import _codec as codec
from statesaga._errors import StepTimeout
from statesaga._leases import LeaseLost, Leases
from statesaga._live import LiveRun, Results
from statesaga._spec import SagaSpec
from statesaga._status import SagaStatus


@attrs.frozen
class StepContext:
    """What a step or compensation handler is given.

    Attributes:
        saga_id: the saga's id.
        step: the step's name (for a compensation: the step it compensates).
        attempt: this attempt's number, from 1; it grows across retries and resumes.
        input: the saga's input.
        idempotency_key: stable for this saga and step (or compensation) across
            retries, crashes and resumes: pass it to external services so they
            can drop duplicates.
        results: results of the steps completed so far, by step name.
        connection: for ``transactional=True`` steps, the connection of the
            transaction that records the step's completion; ``None`` otherwise.
    """

    saga_id: str
    step: str
    attempt: int
    input: Any
    idempotency_key: str
    results: Mapping[str, Any]
    connection: Connection | None = None

    @property
    def step_key(self) -> str:
        """The idempotency key of the step itself (for a step, ``idempotency_key``).
        A compensation handed ``NOT_COMPLETED`` looks up by it what the step's
        attempts may have done."""
        return f"{self.saga_id}:{self.step}"


@attrs.frozen
class Signal:
    """What a wait step's handler is given: the event it waited for.

    Attributes:
        event: the event's name.
        payload: what the sender sent, as JSON values.
        event_id: the sender's id for it (duplicates of it were dropped).
        received_at: when it was stored (UNIX seconds).
    """

    event: str
    payload: Any
    event_id: str
    received_at: float


@attrs.frozen
class Transition:
    """One transition a runner took, as ``Hooks.transition`` sees it.

    Attributes:
        saga_id: the saga's id.
        spec: its definition (``spec.name``, ``spec.version``, ``spec.steps``).
        step: the step of the state left (for a compensation: the step it undoes).
        kind: what the state left is: ``step`` or ``compensation``.
        source: the state left.
        trigger: the machine's trigger (``succeed``, ``retry``, ``fail``,
            ``fail_in_doubt``, ``expire``, ...), or ``wait``: a wait step found no
            event and the saga was let go until one comes (it stays in ``source``).
        dest: the state entered.
        attempt: the attempt whose outcome it records.
        status: the saga's status in ``dest``.
        parked: the runner let go of the saga (a retry delay it does not sleep
            through, or a wait); another attempt comes later, maybe elsewhere.
        error: the failure it records (``None`` for a success).
    """

    saga_id: str
    spec: SagaSpec
    step: str
    kind: str
    source: str
    trigger: str
    dest: str
    attempt: int
    status: SagaStatus
    parked: bool
    error: str | None


class Hooks:
    """Observation and fault-injection points inside the runner.

    ``statesaga.testing`` subclasses this to inject failures and simulate
    crashes; applications may use it for tracing. Set ``engine.hooks``, or add
    an observer with ``engine.observe``.
    """

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Invoke a handler (``fn(*args)``) for ``state``; may raise instead."""
        return fn(*args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        """Called at ``before_commit`` (the state is the one being left) and
        ``after_commit`` (the state is the one entered)."""

    def transition(self, transition: Transition) -> None:
        """Called once per transition, when its writes are made (for a
        transactional attempt: in its transaction, which commits next)."""


def _around(
    hooks: Hooks, saga_id: str, state: str, attempt: int, fn: Callable[..., Any]
) -> Callable[..., Any]:
    return lambda *args: hooks.call(saga_id, state, attempt, fn, args)


class Observed(Hooks):
    """The hooks an engine runs: its observers, in the order they were added,
    around the hooks set as ``engine.hooks`` (``inner``), so that an observer's
    ``call`` sees the handler as the inner hooks made it behave (an injected
    failure is a failure) and a crash the inner hooks raise passes through it."""

    def __init__(self, observers: tuple[Hooks, ...], inner: Hooks | None) -> None:
        self.observers = observers
        self.inner = inner
        self._all = observers if inner is None else (*observers, inner)

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        for hooks in reversed(self._all[1:]):
            fn = _around(hooks, saga_id, state, attempt, fn)
        return self._all[0].call(saga_id, state, attempt, fn, args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        for hooks in self._all:
            hooks.point(point, saga_id, state, attempt)

    def transition(self, transition: Transition) -> None:
        for hooks in self._all:
            hooks.transition(transition)


def observed(observers: tuple[Hooks, ...], inner: Hooks | None) -> Hooks | None:
    """The hooks that run ``observers`` around ``inner`` (no wrapper when there are none)."""
    return Observed(observers, inner) if observers else inner


def describe(error: BaseException) -> str:
    """An error as the log records it: ``Type: message``, made storable on every
    backend (NULs and lone surrogates escaped, cut to a bounded length)."""
    return codec.storable(f"{type(error).__name__}: {error}")


class Interrupted(BaseException):
    """A handler was cancelled from outside (the application's loop shut down):
    an interruption, not a failure. A ``BaseException`` for the same reason as
    ``KeyboardInterrupt``."""


#: What interrupts a saga without failing it: it stays where it was, resumable,
#: with an ``interrupted`` entry in its log.
INTERRUPTS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, Interrupted)


def _run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_forever()
    loop.close()


class HandlerLoop:
    """One long-lived event loop, in a thread of its own, where async handlers run
    when the caller has no loop (a sync ``run``, a worker thread): clients a saga
    keeps across calls (``httpx.AsyncClient``) stay on the loop they were made on."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=_run_until_stopped, args=(loop,), name="statesaga-handlers", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        """Stop the loop (handlers still on it are abandoned, as in a crash)."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)


class Handlers:
    """Calls the handlers of the sagas one runner drives.

    Args:
        leases: the runner's leases; an async handler of a saga whose lease is
            lost is cancelled.
        loop: where async handlers run when a run brings no loop of its own.
    """

    def __init__(self, leases: Leases, loop: HandlerLoop) -> None:
        self.leases = leases
        self.loop = loop
        self.hooks: Hooks | None = None

    def context(
        self, run: LiveRun, step: str, key: str, connection: Connection | None
    ) -> StepContext:
        """The context of the attempt in flight of ``run`` at ``step``."""
        return StepContext(  # positional: attrs' __init__ binds them faster
            run.saga_id,
            step,
            run.attempt,
            run.handed_input(),
            f"{run.saga_id}:{key}",
            Results(run, run.defn.spec),
            connection,
        )

    def call(
        self,
        run: LiveRun,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float | None,
        what: str,
        is_async: bool,
    ) -> Any:
        """Call a handler, sync or async, within its timeout.

        An async handler is cancelled when its timeout expires. A sync handler
        cannot be stopped: it runs to its end, and if that took longer than its
        timeout its result is discarded and the attempt counts as failed.

        Raises:
            StepTimeout: it overran ``timeout``.
            LeaseLost: the saga's lease was lost while an async handler ran.
            Interrupted: an async handler was cancelled from outside.
        """
        hooks = self.hooks
        if is_async:
            coro = (
                fn(*args)
                if hooks is None
                else hooks.call(run.saga_id, run.state, run.attempt, fn, args)
            )
            if timeout is not None:
                coro = asyncio.wait_for(coro, timeout)
            loop = run.loop or self.loop.get()
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            self.leases.guard(run.saga_id, future)  # cancelled if the lease is lost
            try:
                return future.result()
            except TimeoutError as exc:
                if timeout is None:
                    raise
                raise StepTimeout(run.saga_id, what, timeout) from exc
            except concurrent.futures.CancelledError:
                if not self.leases.valid(run.saga_id):
                    raise LeaseLost from None
                raise Interrupted(f"{what} was cancelled") from None
            finally:
                self.leases.guard(run.saga_id, None)
        started = time.monotonic() if timeout is not None else 0.0
        result = (
            fn(*args)
            if hooks is None
            else hooks.call(run.saga_id, run.state, run.attempt, fn, args)
        )
        if timeout is not None and time.monotonic() - started > timeout:
            raise StepTimeout(run.saga_id, what, timeout)
        return result
