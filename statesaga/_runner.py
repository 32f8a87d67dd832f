"""Drive one saga: attempt its current state's handler, decide, fire, persist.

A saga's life is a loop over its FSM state: call the handler of the current
state (a step or a compensation), pick the trigger its outcome calls for
(``succeed``, ``retry`` or ``fail``), ask the machine where that leads, and
commit what the journal says the transition writes — the log entries and the
saga row in one transaction — before the run moves on. The stored state is
therefore always the state about to run: after a crash a runner resumes
exactly there (``Runner.reload``).

This is the one place a handler is called (``Runner._call``) and a transition
is committed (``Runner._fire``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
from sqlalchemy.engine import Connection

from statesaga import _codec as codec
from statesaga._errors import (
    ConcurrentUpdate,
    CorruptSaga,
    DeadlineExceeded,
    HistoryMismatch,
    SerializationError,
    StepTimeout,
)
from statesaga._journal import Journal
from statesaga._leases import Leases
from statesaga._machine import SagaMachine
from statesaga._spec import Retry, SagaSpec, StepSpec
from statesaga._views import SagaRun, snapshot
from statesaga.store import SagaRow, SqlStore, Transaction


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


class Hooks:
    """Observation and fault-injection points inside the runner.

    ``statesaga.testing`` subclasses this to inject failures and simulate
    crashes; applications may use it for tracing. Set ``engine.hooks``.
    """

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        """Invoke a handler (``fn(*args)``) for ``state``; may raise instead."""
        return fn(*args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        """Called at ``before_commit`` (the state is the one being left) and
        ``after_commit`` (the state is the one entered)."""


@attrs.frozen
class Definition:
    """A registered saga definition: what the runner needs to drive its sagas.

    Attributes:
        spec: the frozen definition.
        machine: its state machine.
        saga: the instance whose methods are the handlers.
        journal: its log protocol.
    """

    spec: SagaSpec
    machine: SagaMachine
    saga: Any
    journal: Journal

    @classmethod
    def of(cls, saga: Any) -> Definition:
        """The definition of a saga instance."""
        spec: SagaSpec = type(saga).spec
        machine: SagaMachine = type(saga).machine
        return cls(spec, machine, saga, Journal(spec, machine))


#: Errors no retry policy retries: retrying cannot help.
_FINAL = (SerializationError, DeadlineExceeded)

log = logging.getLogger("statesaga")


class _LeaseLost(BaseException):
    """This runner no longer holds the saga: stop driving it, write nothing.

    A ``BaseException`` so that no handler error path treats it as a failure."""


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


class _Rollback(Exception):
    """Carries a transactional step's error out of its transaction, rolling it back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def describe(error: BaseException) -> str:
    """An error as the log records it: ``Type: message``, made storable on every
    backend (NULs and lone surrogates escaped, cut to a bounded length)."""
    return codec.storable(f"{type(error).__name__}: {error}")


class _Interrupted(BaseException):
    """A handler was cancelled from outside (the application's loop shut down):
    an interruption, not a failure. A ``BaseException`` for the same reason as
    ``KeyboardInterrupt``."""


#: What interrupts a saga without failing it: it stays where it was, resumable,
#: with an ``interrupted`` entry in its log.
_INTERRUPTS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, _Interrupted)


def _wait(run: LiveRun, now: float) -> float:
    """What is left of a retry delay: never more than the policy's ``max_delay``
    (a clock that ran fast when the due time was written must not make a runner
    wait an hour), and nothing for a due time that is not a number."""
    due = run.due_at
    if due is None or not math.isfinite(due):
        return 0.0
    info = run.defn.machine.state(run.state)
    assert info.step is not None
    step = run.defn.spec.step(info.step)
    policy = (
        step.retry if info.kind == "step" or step.compensation is None else step.compensation.retry
    )
    return max(0.0, min(due - now, policy.max_delay))


def _handed(value: Any, type_: Any) -> Any:
    """What a handler is handed of a stored value: the value itself when it cannot
    change in place, else a fresh copy (decoded from its JSON), so that what one
    handler does to it is never seen by another — as after a resume."""
    return value if codec.frozen(value) else codec.loads(codec.dumps(value), type_)


class _Results(Mapping[str, Any]):
    """``ctx.results``: read-only, each value handed as ``_handed`` does."""

    __slots__ = ("_run", "_spec")

    def __init__(self, run: LiveRun, spec: SagaSpec) -> None:
        self._run = run
        self._spec = spec

    def __getitem__(self, step: str) -> Any:
        value = self._run.results[step]
        if codec.frozen(value):
            return value
        return codec.loads(self._run.texts[step], self._spec.step(step).result_type)

    def __iter__(self) -> Iterator[str]:
        return iter(self._run.results)

    def __len__(self) -> int:
        return len(self._run.results)

    def __repr__(self) -> str:
        return f"<results {dict(self)!r}>"


class LiveRun:
    """One saga while a runner drives it: where it is and what it has."""

    __slots__ = (
        "attempt",
        "awaiting",
        "comp_failed",
        "deadline_at",
        "defn",
        "due_at",
        "epoch",
        "error",
        "failures",
        "halt",
        "input",
        "input_shared",
        "loop",
        "outcome",
        "parked",
        "parks",
        "results",
        "saga_id",
        "seq",
        "state",
        "texts",
        "tx",
    )

    def __init__(
        self,
        defn: Definition,
        saga_id: str,
        input: Any,
        state: str,
        attempt: int,
        seq: int,
        created_at: float,
        epoch: int,
    ) -> None:
        self.defn = defn
        self.saga_id = saga_id
        self.input = input
        self.input_shared = codec.frozen(input)  # handed as it is (else a copy each time)
        self.state = state
        self.attempt = attempt
        self.seq = seq
        self.results: dict[str, Any] = {}  # as a resume would rebuild them
        self.texts: dict[str, str] = {}  # their JSON, for copies of mutable ones
        self.failures = 0  # failed attempts of the current state, for its retry policy
        self.comp_failed = False
        self.error: str | None = None
        self.outcome: str | None = None  # JSON result or error text of the last attempt
        self.due_at: float | None = None
        self.tx: Transaction | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where async handlers run
        self.epoch = epoch  # the lease epoch this runner holds it at: its writes' fence
        self.parks = False  # let go of the saga during a retry delay instead of sleeping
        self.parked = False  # it was let go to wait out a retry delay
        self.halt: threading.Event | None = None  # set: start no new attempt, let it go
        self.awaiting = False  # the next attempt in ``state`` has not begun yet
        deadline = defn.spec.deadline
        self.deadline_at = None if deadline is None else created_at + deadline

    def snapshot(self) -> SagaRun:
        """The run as the caller sees it."""
        return snapshot(
            self.defn.spec, self.defn.machine, self.saga_id, self.state, self.results, self.error
        )


class Runner:
    """Drives sagas on a store, under the leases of one owner.

    Args:
        store: where transitions are committed.
        leases: the owner's leases; a saga is driven only while its lease holds.
        clock: the time source (UNIX seconds).
        sleep: how a retry delay is waited out by a run that does not park.
        handler_loop: where async handlers run when a run brings no loop of its own.
    """

    def __init__(
        self,
        store: SqlStore,
        leases: Leases,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        handler_loop: HandlerLoop,
    ) -> None:
        self.store = store
        self.leases = leases
        self.clock = clock
        self.sleep = sleep
        self.handler_loop = handler_loop
        self.hooks: Hooks | None = None

    def claimed(self, defn: Definition, row: SagaRow) -> LiveRun:
        """Rebuild a saga this runner just claimed from its row and log; its next
        attempt begins (and is recorded, so that a crash during it is counted)
        when ``drive`` reaches it.

        Raises:
            ResumeError: its row or log cannot be read or do not fit ``defn``;
                nothing was written.
        """
        try:
            rebuilt = defn.journal.rebuild(row, self.store.log(row.saga_id))
        except HistoryMismatch as exc:
            raise CorruptSaga(row.saga_id, exc.problem) from exc
        except Exception as exc:
            raise CorruptSaga(
                row.saga_id, f"its stored data cannot be read: {describe(exc)}"
            ) from exc
        run = LiveRun(
            defn,
            row.saga_id,
            rebuilt.input,
            row.state,
            row.attempt,
            row.seq,
            row.created_at,
            row.lease_epoch,
        )
        run.results = rebuilt.results
        run.texts = rebuilt.texts
        run.error = row.error
        run.due_at = row.due_at
        run.failures = rebuilt.replay.failures
        run.comp_failed = rebuilt.replay.compensation_failed
        run.awaiting = True
        self.leases.hold(row.saga_id, row.lease_until or self.leases.until())
        return run

    def _begin(self, run: LiveRun) -> None:
        """Start the next attempt in the run's state: wait out what is left of a
        retry delay here, then record the attempt as it really starts."""
        if run.due_at is not None:
            wait = _wait(run, self.clock())
            if wait > 0:
                self.sleep(wait)
            if not self.leases.valid(run.saga_id):
                raise _LeaseLost
        until = self.leases.until()
        changes, entry = run.defn.journal.begin(
            run.saga_id,
            run.seq,
            run.state,
            run.attempt,
            run.error,
            self.clock(),
            (self.leases.owner, until),
        )
        self.store.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
        self.leases.hold(run.saga_id, until)
        run.attempt = changes["attempt"]
        run.seq = changes["seq"]
        run.due_at = None
        run.awaiting = False

    def drive(self, run: LiveRun) -> SagaRun | None:
        """Run the saga until it reaches a terminal state, or (for a run that
        parks) a retry delay.

        Returns:
            Where it stopped; ``None`` when this runner lost it to another (the
            other runner carries on; nothing more was written here).
        """
        machine = run.defn.machine
        spec = run.defn.spec
        try:
            while not machine.is_terminal(run.state) and not run.parked:
                if not self.leases.valid(run.saga_id):
                    raise _LeaseLost
                if run.halt is not None and run.halt.is_set():
                    self._let_go(run)
                    return run.snapshot()
                info = machine.state(run.state)
                assert info.step is not None
                step = spec.step(info.step)
                if run.awaiting:
                    self._begin(run)
                if info.kind == "step":
                    self._attempt_step(run, step)
                else:
                    self._attempt_compensation(run, step)
        except (ConcurrentUpdate, _LeaseLost):
            log.info("statesaga: saga %s is driven by another runner now", run.saga_id)
            self.leases.drop(run.saga_id)
            return None
        except BaseException as exc:
            # Interrupted (Ctrl-C, shutdown, a cancelled task), or a crash simulated
            # or real: the saga stays where it was, and any runner may take it at once.
            if isinstance(exc, _INTERRUPTS):
                self._interrupted(run, exc)
            self._let_go(run)
            if isinstance(exc, _Interrupted):
                raise asyncio.CancelledError(str(exc)) from exc
            raise
        return run.snapshot()

    def _interrupted(self, run: LiveRun, exc: BaseException) -> None:
        """Say in the log that the attempt in flight was interrupted (best effort:
        the process may be going down)."""
        if run.awaiting or run.tx is not None:
            return  # no attempt in flight, or its transaction is rolling back
        changes, entry = run.defn.journal.interrupted(
            run.saga_id, run.seq, run.state, run.attempt, run.error, describe(exc), self.clock()
        )
        with contextlib.suppress(Exception):
            self.store.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
            run.seq = changes["seq"]

    def _let_go(self, run: LiveRun) -> None:
        self.leases.drop(run.saga_id)
        with contextlib.suppress(Exception):
            self.store.release(self.leases.owner, [run.saga_id])

    # -- one attempt ------------------------------------------------------

    def _context(
        self, run: LiveRun, step: str, key: str, connection: Connection | None
    ) -> StepContext:
        spec = run.defn.spec
        return StepContext(
            saga_id=run.saga_id,
            step=step,
            attempt=run.attempt,
            input=run.input if run.input_shared else _handed(run.input, spec.input_type),
            idempotency_key=f"{run.saga_id}:{key}",
            results=_Results(run, spec),
            connection=connection,
        )

    def _attempt_step(self, run: LiveRun, step: StepSpec) -> None:
        def invoke(connection: Connection | None) -> Callable[[], None]:
            if run.deadline_at is not None and self.clock() >= run.deadline_at:
                raise DeadlineExceeded(run.saga_id, step.name, run.defn.spec.deadline or 0.0)
            ctx = self._context(run, step.name, step.name, connection)
            args = (run.defn.saga, ctx)
            result = self._call(run, step.handler, args, step.timeout, step.name, step.is_async)
            value, text = self._stored(run, step, result)

            def record() -> None:
                run.results[step.name] = value
                run.texts[step.name] = text
                run.outcome = text
                self._fire(run, "succeed")

            return record

        self._attempt(run, step.transactional, step.retry, invoke, compensation=False)

    def _attempt_compensation(self, run: LiveRun, step: StepSpec) -> None:
        comp = step.compensation
        assert comp is not None

        def invoke(connection: Connection | None) -> Callable[[], None]:
            ctx = self._context(run, step.name, comp.name, connection)
            args = (run.defn.saga, ctx, _Results(run, run.defn.spec).get(step.name))
            self._call(run, comp.handler, args, None, comp.name, comp.is_async)

            def record() -> None:
                run.outcome = None
                self._fire(run, "succeed")

            return record

        self._attempt(run, comp.transactional, comp.retry, invoke, compensation=True)

    def _attempt(
        self,
        run: LiveRun,
        transactional: bool,
        retry: Retry,
        invoke: Callable[[Connection | None], Callable[[], None]],
        compensation: bool,
    ) -> None:
        """Make one attempt: ``invoke`` runs the handler and returns how to record
        its success; a failure goes to the retry policy. A transactional attempt
        runs the handler and records its success in one transaction."""
        if not transactional:
            try:
                record = invoke(None)
            except Exception as exc:
                self._failed(run, retry, exc, compensation)
                return
            record()
            return
        try:
            with self.store.transaction() as tx:
                try:
                    record = invoke(tx.connection)
                except Exception as exc:
                    # Leaving the block rolls back the handler's own writes.
                    raise _Rollback(exc) from exc
                run.tx = tx
                try:
                    record()
                finally:
                    run.tx = None
        except _Rollback as rollback:
            self._failed(run, retry, rollback.error, compensation)
            return
        self._probe("after_commit", run)

    def _call(
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
            loop = run.loop or self.handler_loop.get()
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
                    raise _LeaseLost from None
                raise _Interrupted(f"{what} was cancelled") from None
            finally:
                self.leases.guard(run.saga_id, None)
        started = time.monotonic()
        result = (
            fn(*args)
            if hooks is None
            else hooks.call(run.saga_id, run.state, run.attempt, fn, args)
        )
        if timeout is not None and time.monotonic() - started > timeout:
            raise StepTimeout(run.saga_id, what, timeout)
        return result

    def _stored(self, run: LiveRun, step: StepSpec, result: Any) -> tuple[Any, str]:
        """The result as a resumed saga would see it, and its JSON; a result that
        would come back different is a ``SerializationError`` (never retried)."""
        try:
            return codec.stored(result, step.result_type)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                run.defn.spec.name, run.saga_id, step.name, result, str(exc)
            ) from exc

    def _failed(self, run: LiveRun, retry: Retry, error: Exception, compensation: bool) -> None:
        run.failures += 1
        run.outcome = describe(error)
        if not isinstance(error, _FINAL) and retry.should_retry(error, run.failures):
            delay = retry.delay(run.failures)
            run.due_at = self.clock() + delay
            # A run that parks lets the saga go for the delay: any runner takes it when due.
            run.parked = run.parks and delay > 0
            self._fire(run, "retry")
            run.awaiting = True
            return
        if compensation:
            run.comp_failed = True
        elif run.error is None:
            run.error = run.outcome
        self._fire(run, "fail")

    # -- one transition ---------------------------------------------------

    def _fire(self, run: LiveRun, trigger: str) -> None:
        """Take the transition ``trigger`` calls for: commit what it writes (in the
        attempt's transaction, if it has one), then move the run into its state."""
        source = run.state
        dest = run.defn.machine.next_state(source, trigger, run.comp_failed)
        until = self.leases.until()
        keep = None if run.parked else (self.leases.owner, until)
        changes, entries = run.defn.journal.transition(
            run.saga_id,
            run.seq,
            run.attempt,
            source,
            trigger,
            dest,
            run.outcome,
            run.error,
            run.due_at,
            self.clock(),
            keep,
        )
        self._probe("before_commit", run)
        fence = (run.seq, run.epoch)
        if run.tx is not None:
            run.tx.advance(run.saga_id, fence, changes, entries)
        else:
            self.store.advance(run.saga_id, fence, changes, entries)
        if changes["owner"] is None:
            self.leases.drop(run.saga_id)
        else:
            self.leases.hold(run.saga_id, until)
        run.state = dest
        run.seq = changes["seq"]
        run.attempt = changes["attempt"]
        if trigger != "retry":
            run.failures = 0
        if run.tx is None:
            self._probe("after_commit", run)

    def _probe(self, point: str, run: LiveRun) -> None:
        if self.hooks is not None:
            self.hooks.point(point, run.saga_id, run.state, run.attempt)
