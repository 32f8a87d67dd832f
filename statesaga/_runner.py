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
from collections.abc import Callable, Sequence

from statesaga._attempts import Attempts
from statesaga._errors import (
    ConcurrentUpdate,
    CorruptSaga,
    HistoryMismatch,
)
from statesaga._handlers import (
    INTERRUPTS,
    HandlerLoop,
    Handlers,
    Hooks,
    Interrupted,
    describe,
)
from statesaga._leases import LeaseLost, Leases
from statesaga._live import LiveRun
from statesaga._observation import Observation
from statesaga._registry import Definition
from statesaga._requests import Requests
from statesaga._views import SagaRun
from statesaga.store import LogRow, SagaRow, SqlStore, Transaction

log = logging.getLogger("statesaga")


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


class Runner(Attempts, Requests, Observation):
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

    def claimed(
        self,
        defn: Definition,
        row: SagaRow,
        log: Sequence[LogRow] | None = None,
        *,
        hold: bool = True,
    ) -> LiveRun:
        """Rebuild a saga this runner just claimed from its row and log (read now
        if not given); its next attempt begins (and is recorded, so that a crash
        during it is counted) when ``drive`` reaches it, or ``begin`` starts it.
        Without ``hold`` its lease is not recorded yet: the claim is not committed,
        and a heartbeat now would not find it in the database and call it lost.

        Raises:
            ResumeError: its row or log cannot be read or do not fit ``defn``;
                nothing was written.
        """
        try:
            stored = self.store.log(row.saga_id) if log is None else log
            rebuilt = defn.journal.rebuild(row, stored)
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
        if hold:
            self.leases.hold(row.saga_id, row.lease_until or self.leases.until())
        self.leases.note_request(row.saga_id, row.request)
        return run

    def begin(self, run: LiveRun, tx: Transaction) -> None:
        """Start the next attempt of a saga just claimed, in the claim's transaction
        ``tx``: one commit for both, so a started saga's first step runs sooner.
        Its lease is recorded by whoever commits ``tx``, once committed."""
        self._begin(run, tx)

    def _begin(self, run: LiveRun, tx: Transaction | None = None) -> None:
        """Start the next attempt in the run's state: wait out what is left of a
        retry delay here, then record the attempt as it really starts (a wait step's
        due time is when it gives up, not a delay: it is not waited out here), in
        ``tx`` if given."""
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
        fence = (run.seq, run.epoch)
        if tx is None:
            self.store.advance(run.saga_id, fence, changes, [entry])
            self.leases.hold(run.saga_id, until)
        else:
            tx.advance(run.saga_id, fence, changes, [entry])
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
