"""Drive one saga: attempt its current state's handler, decide, fire, persist.

A saga's life is a loop over its FSM state: call the handler of the current
state (a step or a compensation), pick the trigger its outcome calls for
(``succeed``, ``retry`` or ``fail``), ask the machine where that leads, and
commit what the journal says the transition writes — the log entries and the
saga row in one transaction — before the run moves on. The stored state is
therefore always the state about to run: after a crash a runner resumes
exactly there (``Runner.claimed``).

This is the one place a transition is committed (``Runner._fire``); handlers
are called through ``statesaga._handlers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from statesaga import _codec as codec
from statesaga._errors import (
    ConcurrentUpdate,
    CorruptSaga,
    DeadlineExceeded,
    HistoryMismatch,
    InDoubt,
    SagaCancelled,
    SerializationError,
    StepTimeout,
)
from statesaga._handlers import (
    INTERRUPTS,
    HandlerLoop,
    Handlers,
    Hooks,
    Interrupted,
    Signal,
    Transition,
    describe,
)
from statesaga._leases import LeaseLost, Leases
from statesaga._live import LiveRun, Results
from statesaga._registry import Definition
from statesaga._spec import NOT_COMPLETED, Retry, StepSpec
from statesaga._views import SagaRun
from statesaga.store import SagaRow, SqlStore

#: Errors no retry policy retries: retrying cannot help.
_FINAL = (SerializationError, DeadlineExceeded)

log = logging.getLogger("statesaga")


class _Rollback(Exception):
    """Carries a transactional step's error out of its transaction, rolling it back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


#: Failures after which a step's handler may have acted, whatever the step says.
_IN_DOUBT: tuple[type[BaseException], ...] = (StepTimeout, InDoubt, SerializationError)


def _in_doubt(step: StepSpec, error: Exception) -> bool:
    """Whether ``step`` failing with ``error`` may have left its effect behind (and
    it has a compensation to undo it): it timed out, raised ``InDoubt`` or an error
    it lists as in doubt, returned a result that cannot be stored, or it treats
    every failure so (``compensate_failed``)."""
    if step.compensation is None:
        return False
    return step.compensate_failed or isinstance(error, _IN_DOUBT + step.in_doubt)


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
        self.handlers = Handlers(leases, handler_loop)

    @property
    def hooks(self) -> Hooks | None:
        """Observation and fault-injection points."""
        return self.handlers.hooks

    @hooks.setter
    def hooks(self, hooks: Hooks | None) -> None:
        self.handlers.hooks = hooks

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
        run.wait_until = row.wait_until
        run.awaiting = True
        self.leases.hold(row.saga_id, row.lease_until or self.leases.until())
        self.leases.note_request(row.saga_id, row.request)
        return run

    def _begin(self, run: LiveRun) -> None:
        """Start the next attempt in the run's state: wait out what is left of a
        retry delay here, then record the attempt as it really starts (a wait step's
        due time is when it gives up, not a delay: it is not waited out here)."""
        if run.due_at is not None and run.wait_until is None:
            wait = _wait(run, self.clock())
            if wait > 0:
                self.sleep(wait)
            if not self.leases.valid(run.saga_id):
                raise LeaseLost
        until = self.leases.until()
        changes, entry = run.defn.journal.begin(
            run.saga_id,
            run.seq,
            run.state,
            run.attempt,
            run.error,
            self.clock(),
            (self.leases.owner, until),
            run.wait_until,
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
                    raise LeaseLost
                if run.halt is not None and run.halt.is_set():
                    self._let_go(run)
                    return run.snapshot()
                info = machine.state(run.state)
                assert info.step is not None
                step = spec.step(info.step)
                if run.awaiting:
                    self._begin(run)
                request = self.leases.requested(run.saga_id)
                if request is not None and self._carry_out(run, request, info.kind):
                    continue
                if step.wait is not None:
                    self._attempt_wait(run, step)
                elif info.kind == "step":
                    self._attempt_step(run, step)
                else:
                    self._attempt_compensation(run, step)
        except (ConcurrentUpdate, LeaseLost):
            log.info("statesaga: saga %s is driven by another runner now", run.saga_id)
            self.leases.drop(run.saga_id)
            return None
        except BaseException as exc:
            # Interrupted (Ctrl-C, shutdown, a cancelled task), or a crash simulated
            # or real: the saga stays where it was, and any runner may take it at once.
            if isinstance(exc, INTERRUPTS):
                self._interrupted(run, exc)
            self._let_go(run)
            if isinstance(exc, Interrupted):
                raise asyncio.CancelledError(str(exc)) from exc
            raise
        return run.snapshot()

    def _carry_out(self, run: LiveRun, request: str, kind: str) -> bool:
        """Carry out an operator's request on the saga, between two attempts (the
        one in flight when it was asked has recorded its outcome): ``cancel`` a
        saga going forward (it compensates), ``pause`` it (it is let go, and no
        runner takes it until unpaused). Returns whether the run goes on elsewhere
        than it would have (the loop looks again)."""
        row = self.store.get(run.saga_id)
        by = row.request_by if row is not None else None
        why = row.request_reason if row is not None else None
        self.leases.note_request(run.saga_id, None)
        if request == "cancel" and kind == "step":
            run.outcome = describe(SagaCancelled(run.saga_id, by, why))
            run.error = run.outcome
            self._fire(run, "cancel")
            self.store.settle_request(run.saga_id, "cancel")
            return True
        if request == "pause":
            note = codec.dumps({"actor": by, "reason": why})
            changes, entry = run.defn.journal.paused(
                run.saga_id,
                run.seq,
                run.state,
                run.attempt,
                run.error,
                note,
                self.clock(),
                run.wait_until,
            )
            self.store.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
            run.seq = changes["seq"]
            self.store.settle_request(run.saga_id, "pause", then="paused")
            self.leases.drop(run.saga_id)
            self._observe(run, run.state, "pause", run.state)
            run.parked = True
            run.awaiting = True
            return True
        if request == "cancel":
            self.store.settle_request(run.saga_id, "cancel")  # compensating already
        return False

    def _interrupted(self, run: LiveRun, exc: BaseException) -> None:
        """Say in the log that the attempt in flight was interrupted (best effort:
        the process may be going down)."""
        if run.awaiting or run.tx is not None or run.defn.machine.is_terminal(run.state):
            return  # no attempt in flight (or the saga ended), or its transaction rolls back
        changes, entry = run.defn.journal.interrupted(
            run.saga_id,
            run.seq,
            run.state,
            run.attempt,
            run.error,
            describe(exc),
            self.clock(),
            run.wait_until,
        )
        with contextlib.suppress(Exception):
            self.store.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
            run.seq = changes["seq"]

    def _let_go(self, run: LiveRun) -> None:
        self.leases.drop(run.saga_id)
        with contextlib.suppress(Exception):
            self.store.release(self.leases.owner, [run.saga_id])

    # -- one attempt ------------------------------------------------------

    def _attempt_step(self, run: LiveRun, step: StepSpec) -> None:
        def invoke(connection: Connection | None) -> Callable[[], None]:
            if run.deadline_at is not None and self.clock() >= run.deadline_at:
                raise DeadlineExceeded(run.saga_id, step.name, run.defn.spec.deadline or 0.0)
            ctx = self.handlers.context(run, step.name, step.name, connection)
            args = (run.defn.saga, ctx)
            result = self.handlers.call(
                run, step.handler, args, step.timeout, step.name, step.is_async
            )
            value, text = self._stored(run, step, result)

            def record() -> None:
                run.results[step.name] = value
                run.texts[step.name] = text
                run.outcome = text
                self._fire(run, "succeed")

            return record

        self._attempt(run, step.transactional, step.retry, invoke, step)

    def _attempt_wait(self, run: LiveRun, step: StepSpec) -> None:
        """An attempt at a wait step, in one transaction: take its event (the
        oldest one sent to the saga or to its key) and hand it to the handler,
        recording the step's completion and the event's consumption together; or,
        with no event yet, park the saga until one comes or the wait gives up."""
        wait = step.wait
        assert wait is not None

        def invoke(connection: Connection | None) -> Callable[[], None]:
            assert connection is not None
            ctx = self.handlers.context(run, step.name, step.name, connection)
            key = None if wait.key is None else str(wait.key(ctx))
            now = self.clock()
            if run.wait_until is None and wait.timeout is not None:
                run.wait_until = now + wait.timeout
            found = self.store.take(connection, wait.event, run.saga_id, key, now)
            if found is None:
                if run.wait_until is not None and now >= run.wait_until:
                    return lambda: self._expire(run, wait.event, wait.timeout)
                return lambda: self._park(run, key)
            signal = Signal(
                found.event, codec.loads(found.payload, None), found.event_id, found.received_at
            )
            args = (run.defn.saga, ctx, signal)
            result = self.handlers.call(
                run, step.handler, args, step.timeout, step.name, step.is_async
            )
            value, text = self._stored(run, step, result)

            def record() -> None:
                run.results[step.name] = value
                run.texts[step.name] = text
                run.outcome = text
                self._fire(run, "succeed")

            return record

        self._attempt(run, True, step.retry, invoke, step)

    def _park(self, run: LiveRun, key: str | None) -> None:
        """Let go of a saga at a wait step until its event or its timeout (in the
        attempt's transaction, with the check that found no event)."""
        assert run.tx is not None
        changes, entry = run.defn.journal.waiting(
            run.saga_id,
            run.seq,
            run.state,
            run.attempt,
            run.error,
            key,
            run.wait_until,
            self.clock(),
        )
        run.tx.advance(run.saga_id, (run.seq, run.epoch), changes, [entry])
        self.leases.drop(run.saga_id)
        run.seq = changes["seq"]
        run.due_at = changes["due_at"]
        run.parked = True
        run.awaiting = True
        self._observe(run, run.state, "wait", run.state)

    def _expire(self, run: LiveRun, event: str, timeout: float | None) -> None:
        """A wait that gave up: a definite failure; the saga compensates."""
        run.outcome = f"WaitTimedOut: no {event!r} signal within {timeout}s"
        if run.error is None:
            run.error = run.outcome
        self._fire(run, "expire")

    def _attempt_compensation(self, run: LiveRun, step: StepSpec) -> None:
        comp = step.compensation
        assert comp is not None

        def invoke(connection: Connection | None) -> Callable[[], None]:
            ctx = self.handlers.context(run, step.name, comp.name, connection)
            # A step that failed in doubt has no result: its compensation gets the marker.
            done = step.name in run.results
            result = Results(run, run.defn.spec)[step.name] if done else NOT_COMPLETED
            args = (run.defn.saga, ctx, result)
            self.handlers.call(run, comp.handler, args, None, comp.name, comp.is_async)

            def record() -> None:
                run.outcome = None
                self._fire(run, "succeed")

            return record

        self._attempt(run, comp.transactional, comp.retry, invoke, None)

    def _attempt(
        self,
        run: LiveRun,
        transactional: bool,
        retry: Retry,
        invoke: Callable[[Connection | None], Callable[[], None]],
        step: StepSpec | None,
    ) -> None:
        """Make one attempt (of ``step``; ``None``: of a compensation): ``invoke``
        runs the handler and returns how to record its success; a failure goes to
        the retry policy. A transactional attempt runs the handler and records its
        success in one transaction."""
        if not transactional:
            try:
                record = invoke(None)
            except Exception as exc:
                self._failed(run, retry, exc, step)
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
            self._failed(run, retry, rollback.error, step)
            return
        self._probe("after_commit", run)

    def _stored(self, run: LiveRun, step: StepSpec, result: Any) -> tuple[Any, str]:
        """The result as a resumed saga would see it, and its JSON; a result that
        would come back different is a ``SerializationError`` (never retried)."""
        try:
            return codec.stored(result, step.result_type)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                run.defn.spec.name, run.saga_id, step.name, result, str(exc)
            ) from exc

    def _failed(self, run: LiveRun, retry: Retry, error: Exception, step: StepSpec | None) -> None:
        """A failed attempt (of ``step``; ``None``: of a compensation): retry it,
        or fail for good — in doubt when the step's handler may have acted, so
        that its own compensation runs first."""
        run.failures += 1
        run.outcome = describe(error)
        if not isinstance(error, _FINAL) and retry.should_retry(error, run.failures):
            delay = retry.delay(run.failures)
            run.due_at = self.clock() + delay
            # A run that parks lets the saga go for the delay: any runner takes it when due.
            run.parked = run.parks and delay > 0
            self._fire(run, "retry")
            return
        if step is None:
            run.comp_failed = True
            self._fire(run, "fail")
            return
        if run.error is None:
            run.error = run.outcome
        self._fire(run, "fail_in_doubt" if _in_doubt(step, error) else "fail")

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
            run.wait_until,
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
        self._observe(run, source, trigger, dest)
        run.state = dest
        run.seq = changes["seq"]
        run.attempt = changes["attempt"]
        if trigger == "retry":
            run.awaiting = True  # its next attempt begins (and is logged) when it starts
        else:
            run.failures = 0
            run.wait_until = None
        if run.tx is None:
            self._probe("after_commit", run)

    def _observe(self, run: LiveRun, source: str, trigger: str, dest: str) -> None:
        """Tell the ``statesaga`` logger (one INFO record, the transition in its
        extra fields) and the hooks about a transition just written."""
        hooks = self.handlers.hooks
        logging_on = log.isEnabledFor(logging.INFO)
        if hooks is None and not logging_on:
            return
        spec, machine = run.defn.spec, run.defn.machine
        left = machine.state(source)
        step = left.step or source
        if logging_on:
            log.info(
                "%s %s: %s --%s--> %s (attempt %d)",
                spec.name,
                run.saga_id,
                source,
                trigger,
                dest,
                run.attempt,
                extra={
                    "saga_id": run.saga_id,
                    "saga": spec.name,
                    "step": step,
                    "from": source,
                    "to": dest,
                    "trigger": trigger,
                    "attempt": run.attempt,
                },
            )
        if hooks is not None:
            hooks.transition(
                Transition(
                    run.saga_id,
                    spec,
                    step,
                    left.kind,
                    source,
                    trigger,
                    dest,
                    run.attempt,
                    machine.state(dest).status,
                    run.parked,
                    None if trigger in ("succeed", "wait") else run.outcome,
                )
            )

    def _probe(self, point: str, run: LiveRun) -> None:
        hooks = self.handlers.hooks
        if hooks is not None:
            hooks.point(point, run.saga_id, run.state, run.attempt)
