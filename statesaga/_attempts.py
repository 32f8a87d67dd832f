"""One attempt at a saga's current state: call its handler, decide what follows.

A step's attempt calls its handler within its timeout and records its result
(the same value a resumed saga would rebuild); a compensation's is handed the
step's result, or ``NOT_COMPLETED`` when the step failed in doubt; a wait
step's takes its event, or parks the saga until one comes. A failure goes to
the retry policy: retried, or failed for good — in doubt when the handler may
have acted. The transition each outcome calls for is fired by the runner
(``Runner._fire``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from statesaga import _codec as codec
from statesaga._errors import (
    DeadlineExceeded,
    InDoubt,
    SerializationError,
    StepTimeout,
)
from statesaga._handlers import Handlers, Signal, describe
from statesaga._leases import Leases
from statesaga._live import LiveRun, Results
from statesaga._spec import NOT_COMPLETED, Retry, StepSpec
from statesaga.store import SqlStore

#: Errors no retry policy retries: retrying cannot help.
_FINAL = (SerializationError, DeadlineExceeded)


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


class Attempts:
    """The attempts a ``Runner`` makes (its methods are the runner's)."""

    store: SqlStore
    leases: Leases
    clock: Callable[[], float]
    handlers: Handlers
    _fire: Callable[[LiveRun, str], None]
    _observe: Callable[[LiveRun, str, str, str], None]
    _probe: Callable[[str, LiveRun], None]

    def _attempt_step(self, run: LiveRun, step: StepSpec) -> None:
        def invoke(connection: Connection | None) -> Callable[[], None]:
            if run.deadline_at is not None and self.clock() >= run.deadline_at:
                raise DeadlineExceeded(run.saga_id, step.name, run.defn.spec.deadline or 0.0)
            ctx = self.handlers.context(run, step.name, step.name, connection)
            return self._completing(run, step, (run.defn.saga, ctx))

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
            return self._completing(run, step, (run.defn.saga, ctx, signal))

        self._attempt(run, True, step.retry, invoke, step)

    def _completing(
        self, run: LiveRun, step: StepSpec, args: tuple[Any, ...]
    ) -> Callable[[], None]:
        """Call a step's handler with ``args``; return how to record its result
        (as a resumed saga would see it) and its completion."""
        result = self.handlers.call(run, step.handler, args, step.timeout, step.name, step.is_async)
        value, text = self._stored(run, step, result)

        def record() -> None:
            run.results[step.name] = value
            run.texts[step.name] = text
            run.outcome = text
            self._fire(run, "succeed")

        return record

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
