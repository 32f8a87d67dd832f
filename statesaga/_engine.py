"""The saga engine: drives a saga's state machine, runs its handlers, persists
every transition and compensates on failure.

A saga's life is a loop over its FSM state: run the handler of the current
state (a step or a compensation), pick the trigger its outcome calls for
(``succeed``, ``retry`` or ``fail``), and fire it. The transition's
``on_transition`` callback writes the log entries and the saga row in one
transaction before the state changes, so the stored state is always the state
about to run: after a crash the engine resumes exactly there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
from sqlalchemy.engine import Connection, Engine

from statesaga import _codec as codec
from statesaga._definition import Retry, Saga, SagaSpec, StepSpec
from statesaga._errors import (
    ConcurrentUpdate,
    DeadlineExceeded,
    InvalidInput,
    ResumeError,
    SagaIdConflict,
    SagaNotFound,
    SerializationError,
    StepTimeout,
)
from statesaga._machine import SagaMachine
from statesaga._status import EntryStatus, SagaStatus
from statesaga.store import LogRow, SagaRow, SqlStore, Transaction, make_engine


@attrs.frozen
class LogEntry:
    """One entry of a saga's log.

    Attributes:
        seq: position in the log, from 1.
        step: the step the entry concerns (compensation entries name their step).
        status: what happened.
        attempt: the attempt number of that step or compensation.
        result: the step's result, on ``completed`` entries.
        error: the error, on ``failed`` and ``compensation_failed`` entries.
        at: when it was recorded (UTC).
    """

    seq: int
    step: str
    status: EntryStatus
    attempt: int
    result: Any
    error: str | None
    at: datetime


@attrs.frozen
class SagaRun:
    """A saga's state as seen by the caller.

    Attributes:
        saga_id: its id.
        name: its definition's name.
        version: its definition's version.
        status: its status.
        state: its FSM state (the step or compensation in flight, or a terminal).
        results: the results of its completed steps, by step name.
        error: the error that made it compensate, if any.
        created: ``False`` when ``run``/``start`` found it already existing.
    """

    saga_id: str
    name: str
    version: int
    status: SagaStatus
    state: str
    results: Mapping[str, Any]
    error: str | None
    created: bool = True

    @property
    def succeeded(self) -> bool:
        """Whether the saga completed."""
        return self.status is SagaStatus.COMPLETED


@attrs.frozen
class RecoveryReport:
    """What ``recover`` did.

    Attributes:
        resumed: the sagas it resumed, in their final state.
        skipped: the sagas it could not resume, each with its reason; they were
            left untouched.
    """

    resumed: list[SagaRun]
    skipped: list[ResumeError]


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
    """Observation and fault-injection points inside the engine.

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


@attrs.define
class _Definition:
    spec: SagaSpec
    machine: SagaMachine
    saga: Saga


#: Log entry statuses whose ``outcome`` text is an error, not a result.
_FAILURES = (EntryStatus.FAILED.value, EntryStatus.COMPENSATION_FAILED.value)

#: Errors no retry policy retries: retrying cannot help.
_FINAL = (SerializationError, DeadlineExceeded)


class _Rollback(Exception):
    """Carries a transactional step's error out of its transaction, rolling it back."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Run:
    """The model the machine drives for one saga while it is being run."""

    __slots__ = (
        "attempt",
        "comp_failed",
        "deadline_at",
        "defn",
        "due_at",
        "engine",
        "error",
        "failures",
        "input",
        "loop",
        "outcome",
        "results",
        "saga_id",
        "seq",
        "state",
        "tx",
    )

    def __init__(
        self,
        engine: SagaEngine,
        defn: _Definition,
        saga_id: str,
        input: Any,
        state: str,
        attempt: int,
        seq: int,
    ) -> None:
        self.engine = engine
        self.defn = defn
        self.saga_id = saga_id
        self.input = input
        self.state = state
        self.attempt = attempt
        self.seq = seq
        self.results: dict[str, Any] = {}
        self.failures = 0  # failed attempts of the current state, for its retry policy
        self.comp_failed = False
        self.error: str | None = None
        self.outcome: str | None = None  # JSON result or error text of the last attempt
        self.due_at: float | None = None
        self.tx: Transaction | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where async handlers run
        self.deadline_at: float | None = None

    # Callbacks the machine resolves by name on the model.

    def compensation_had_failed(self) -> bool:
        return self.comp_failed

    def on_transition(self, trigger: str, source: str, dest: str) -> None:
        self.engine._persist(self, trigger, source, dest)


class SagaEngine:
    """Runs sagas and persists them in a SQL database.

    Args:
        url_or_engine: a database URL (``sqlite:///sagas.db``,
            ``postgresql+psycopg://user@host/db``) or an SQLAlchemy ``Engine``.
        sqlite_synchronous: SQLite's ``synchronous`` pragma: ``NORMAL`` (the
            default: durable across process crashes, may lose the last commits
            on power loss) or ``FULL`` (durable across power loss).
        clock: the time source (UNIX seconds); tests may replace it.
        sleep: how the engine waits for a retry delay; tests may replace it.
    """

    def __init__(
        self,
        url_or_engine: str | Engine = "sqlite:///statesaga.db",
        *,
        sqlite_synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(url_or_engine, str):
            db = make_engine(url_or_engine, sqlite_synchronous=sqlite_synchronous)
        else:
            db = url_or_engine
        self.store = SqlStore(db)
        self._definitions: dict[tuple[str, int], _Definition] = {}
        self._clock = clock
        self._sleep = sleep
        self.hooks: Hooks | None = None

    def close(self) -> None:
        """Close the engine's database connections."""
        self.store.close()

    def __enter__(self) -> SagaEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- registration -----------------------------------------------------

    def register(self, *sagas: type[Saga] | Saga) -> None:
        """Register saga definitions, as classes or as instances.

        An instance lets handlers use what it was built with (clients,
        repositories); a class is instantiated without arguments. Several
        versions of one saga may be registered side by side.

        Raises:
            ValueError: another definition is registered under the same name
                and version with a different structure.
        """
        for saga in sagas:
            instance = saga() if isinstance(saga, type) else saga
            cls = type(instance)
            spec: SagaSpec = cls.spec
            known = self._definitions.get((spec.name, spec.version))
            if known is not None and known.spec.fingerprint != spec.fingerprint:
                raise ValueError(
                    f"{spec.key} is already registered with another structure "
                    f"(fingerprint {known.spec.fingerprint}, this one {spec.fingerprint}); "
                    "bump the version of the changed definition"
                )
            self._definitions[(spec.name, spec.version)] = _Definition(spec, cls.machine, instance)

    def _definition_for(self, saga: type[Saga] | Saga) -> _Definition:
        cls = saga if isinstance(saga, type) else type(saga)
        spec: SagaSpec = cls.spec
        defn = self._definitions.get((spec.name, spec.version))
        if defn is None or defn.spec.fingerprint != spec.fingerprint or not isinstance(saga, type):
            self.register(saga)
            defn = self._definitions[(spec.name, spec.version)]
        return defn

    def _definition_of(self, row: SagaRow) -> _Definition:
        defn = self._definitions.get((row.name, row.version))
        if defn is None:
            others = sorted(v for (n, v) in self._definitions if n == row.name)
            have = ", ".join(f"v{v}" for v in others) or "none"
            raise ResumeError(
                row.saga_id,
                f"it needs {row.name} v{row.version} (fingerprint {row.fingerprint}), "
                f"which is not registered (registered versions of {row.name}: {have}); "
                f"register that version beside the others",
            )
        if defn.spec.fingerprint != row.fingerprint:
            raise ResumeError(
                row.saga_id,
                f"it started on {row.name} v{row.version} with fingerprint {row.fingerprint}, "
                f"but the registered v{row.version} has fingerprint {defn.spec.fingerprint} "
                "(its steps changed without a version bump); register the definition it "
                "started on",
            )
        return defn

    # -- starting and running ---------------------------------------------

    def run(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Start a saga and run it to a terminal state.

        Args:
            saga: the definition (class or registered instance).
            input: the saga's input, an instance of its ``input_type``.
            saga_id: a caller-chosen id; if a saga with that id exists, it is
                returned as it is (``created=False``) and nothing runs again.

        Returns:
            The saga's final state: status, results, error.
        """
        return self._run(saga, input, saga_id, None)

    async def arun(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """``run`` for async applications.

        The database work runs in a worker thread so the event loop is never
        blocked; ``async def`` handlers run on the calling event loop, sync
        handlers in the worker thread.
        """
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._run, saga, input, saga_id, loop)

    def _run(
        self,
        saga: type[Saga] | Saga,
        input: Any,
        saga_id: str | None,
        loop: asyncio.AbstractEventLoop | None,
    ) -> SagaRun:
        _, run, existing = self._create(saga, input, saga_id, first_attempt=1)
        if existing is not None:
            return existing
        run.loop = loop
        return self._drive(run)

    def start(
        self, saga: type[Saga] | Saga, input: Any = None, saga_id: str | None = None
    ) -> SagaRun:
        """Record a new saga without running it; ``resume`` or ``recover`` runs it later.

        Idempotent on ``saga_id`` like ``run``.
        """
        try:
            _, run, existing = self._create(saga, input, saga_id, first_attempt=0)
        finally:
            self.store.release()
        if existing is not None:
            return existing
        return self._snapshot(run)

    def _create(
        self, saga: type[Saga] | Saga, input: Any, saga_id: str | None, first_attempt: int
    ) -> tuple[_Definition, _Run, SagaRun | None]:
        defn = self._definition_for(saga)
        spec = defn.spec
        if spec.input_type is not None and not isinstance(input, spec.input_type):
            raise InvalidInput(spec.name, spec.input_type, input)
        sid = saga_id if saga_id is not None else uuid.uuid4().hex
        try:
            input_text = codec.dumps(input)
        except (TypeError, ValueError) as exc:
            raise SerializationError(spec.name, saga_id, "input", input, str(exc)) from exc
        self.store.ensure_schema()
        now = self._clock()
        first = defn.machine.initial
        entries = []
        if first_attempt:
            entries.append(_entry(sid, 1, first, EntryStatus.EXECUTING.value, 1, None, None, now))
        row = {
            "saga_id": sid,
            "name": spec.name,
            "version": spec.version,
            "fingerprint": spec.fingerprint,
            "status": SagaStatus.STARTED.value,
            "state": first,
            "attempt": first_attempt,
            "seq": len(entries),
            "input": input_text,
            "error": None,
            "due_at": None,
            "created_at": now,
            "updated_at": now,
        }
        found = self.store.create(row, entries)
        run = _Run(self, defn, sid, input, first, first_attempt, len(entries))
        if spec.deadline is not None:
            run.deadline_at = now + spec.deadline
        if found is None:
            return defn, run, None
        if found.name != spec.name:
            raise SagaIdConflict(sid, found.name, spec.name)
        return defn, run, attrs.evolve(self.get(sid), created=False)

    # -- resuming ---------------------------------------------------------

    def resume(self, saga_id: str) -> SagaRun:
        """Run a stored saga from its persisted state to a terminal state.

        Completed steps never run again; the step or compensation that was in
        flight runs again with the same idempotency key and the next attempt
        number; later steps and compensations get the stored results. A
        terminal saga is returned as it is.

        Raises:
            SagaNotFound: no saga has that id.
            ResumeError: the saga's definition (name, version, fingerprint) is
                not registered, or its row is corrupt; nothing was written.
        """
        self.store.ensure_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        if row.status not in (SagaStatus.STARTED, SagaStatus.COMPENSATING):
            return self.get(saga_id)
        return self._drive(self._reload(row))

    async def aresume(self, saga_id: str) -> SagaRun:
        """``resume`` for async applications (see ``arun``)."""
        loop = asyncio.get_running_loop()

        def resume() -> SagaRun:
            row = self.store.get(saga_id)
            if row is None or row.status not in (SagaStatus.STARTED, SagaStatus.COMPENSATING):
                return self.resume(saga_id)
            run = self._reload(row)
            run.loop = loop
            return self._drive(run)

        self.store.ensure_schema()
        return await asyncio.to_thread(resume)

    def _reload(self, row: SagaRow) -> _Run:
        defn = self._definition_of(row)
        spec = defn.spec
        machine = defn.machine
        try:
            info = machine.state(row.state)
        except KeyError:
            raise ResumeError(
                row.saga_id, f"its state {row.state!r} is not a state of {spec.key}"
            ) from None
        try:
            input = codec.loads(row.input, spec.input_type)
            rows = self.store.log(row.saga_id)
            results = _results_from_log(rows, spec)
        except Exception as exc:
            raise ResumeError(
                row.saga_id, f"its stored data cannot be read: {_describe(exc)}"
            ) from exc
        if len(rows) != row.seq:
            raise ResumeError(
                row.saga_id, f"its row says {row.seq} log entries but the log has {len(rows)}"
            )
        run = _Run(self, defn, row.saga_id, input, row.state, row.attempt, row.seq)
        run.results = results
        run.error = row.error
        run.due_at = row.due_at
        if spec.deadline is not None:
            run.deadline_at = row.created_at + spec.deadline
        last: dict[str, str] = {}
        for r in rows:
            last[r.step] = r.status
        run.comp_failed = any(
            status == EntryStatus.COMPENSATION_FAILED and step != info.step
            for step, status in last.items()
        )
        failed = EntryStatus.FAILED if info.kind == "step" else EntryStatus.COMPENSATION_FAILED
        entered = EntryStatus.EXECUTING if info.kind == "step" else EntryStatus.COMPENSATING
        for r in reversed(rows):
            if r.step != info.step or r.status not in (failed, entered):
                break
            run.failures += r.status == failed
        # Record the attempt about to be made, so a crash during it is counted.
        attempt = row.attempt + 1
        entry = _entry(
            row.saga_id, row.seq + 1, info.step, entered.value, attempt, None, None, self._clock()
        )
        changes = {
            "status": row.status,
            "state": row.state,
            "attempt": attempt,
            "seq": row.seq + 1,
            "error": row.error,
            "due_at": row.due_at,
            "updated_at": self._clock(),
        }
        self.store.advance(row.saga_id, row.seq, changes, [entry])
        run.attempt = attempt
        run.seq = row.seq + 1
        return run

    def recover(self) -> RecoveryReport:
        """Resume every incomplete saga (``started`` or ``compensating``).

        A saga that cannot be resumed is reported with its reason and left
        untouched; the others go on.
        """
        self.store.ensure_schema()
        resumed: list[SagaRun] = []
        skipped: list[ResumeError] = []
        for row in self.store.incomplete():
            try:
                run = self._reload(row)
            except ResumeError as exc:
                skipped.append(exc)
                continue
            except ConcurrentUpdate:
                continue  # another runner got to it first
            resumed.append(self._drive(run))
        return RecoveryReport(resumed=resumed, skipped=skipped)

    # -- reading ----------------------------------------------------------

    def get(self, saga_id: str) -> SagaRun:
        """The saga's current state.

        Raises:
            SagaNotFound: no saga has that id.
        """
        row, spec = self._row_and_spec(saga_id)
        results = _results_from_log(self.store.log(saga_id), spec)
        return SagaRun(
            saga_id=row.saga_id,
            name=row.name,
            version=row.version,
            status=SagaStatus(row.status),
            state=row.state,
            results=results,
            error=row.error,
        )

    def history(self, saga_id: str) -> list[LogEntry]:
        """The saga's log, oldest first.

        Raises:
            SagaNotFound: no saga has that id.
        """
        _, spec = self._row_and_spec(saga_id)
        return [_entry_from_row(r, spec) for r in self.store.log(saga_id)]

    def _row_and_spec(self, saga_id: str) -> tuple[SagaRow, SagaSpec | None]:
        """The saga's row, and the registered spec it ran on (to rebuild its
        results as their types), if that is registered."""
        self.store.ensure_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        defn = self._definitions.get((row.name, row.version))
        spec = defn.spec if defn and defn.spec.fingerprint == row.fingerprint else None
        return row, spec

    # -- driving ----------------------------------------------------------

    def _drive(self, run: _Run) -> SagaRun:
        try:
            machine = run.defn.machine
            spec = run.defn.spec
            while not machine.is_terminal(run.state):
                info = machine.state(run.state)
                assert info.step is not None
                step = spec.step(info.step)
                if run.due_at is not None:
                    wait = run.due_at - self._clock()
                    if wait > 0:
                        self._sleep(wait)
                    run.due_at = None
                if info.kind == "step":
                    self._attempt_step(run, step)
                else:
                    self._attempt_compensation(run, step)
        finally:
            self.store.release()
        return self._snapshot(run)

    def _context(
        self, run: _Run, step: str, key: str, connection: Connection | None
    ) -> StepContext:
        return StepContext(
            saga_id=run.saga_id,
            step=step,
            attempt=run.attempt,
            input=run.input,
            idempotency_key=f"{run.saga_id}:{key}",
            results=run.results,
            connection=connection,
        )

    def _attempt_step(self, run: _Run, step: StepSpec) -> None:
        def invoke(connection: Connection | None) -> Callable[[], None]:
            result, text = self._execute(run, step, connection)
            return lambda: self._succeeded(run, step, result, text)

        self._attempt(run, step.transactional, step.retry, invoke, compensation=False)

    def _attempt_compensation(self, run: _Run, step: StepSpec) -> None:
        comp = step.compensation
        assert comp is not None

        def invoke(connection: Connection | None) -> Callable[[], None]:
            ctx = self._context(run, step.name, comp.name, connection)
            args = (run.defn.saga, ctx, run.results.get(step.name))
            self._call(run, comp.handler, args, None, comp.name, comp.is_async)
            return lambda: self._compensated(run)

        self._attempt(run, comp.transactional, comp.retry, invoke, compensation=True)

    def _attempt(
        self,
        run: _Run,
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

    def _execute(self, run: _Run, step: StepSpec, connection: Connection | None) -> tuple[Any, str]:
        """Run a step's handler; return its result and the result's JSON."""
        if run.deadline_at is not None and self._clock() >= run.deadline_at:
            raise DeadlineExceeded(run.saga_id, step.name, run.defn.spec.deadline or 0.0)
        ctx = self._context(run, step.name, step.name, connection)
        args = (run.defn.saga, ctx)
        result = self._call(run, step.handler, args, step.timeout, step.name, step.is_async)
        return result, self._encode_result(run, step, result)

    def _call(
        self,
        run: _Run,
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
            try:
                if run.loop is not None:
                    return asyncio.run_coroutine_threadsafe(coro, run.loop).result()
                return asyncio.run(coro)
            except TimeoutError as exc:
                if timeout is None:
                    raise
                raise StepTimeout(run.saga_id, what, timeout) from exc
        started = time.monotonic()
        result = (
            fn(*args)
            if hooks is None
            else hooks.call(run.saga_id, run.state, run.attempt, fn, args)
        )
        if timeout is not None and time.monotonic() - started > timeout:
            raise StepTimeout(run.saga_id, what, timeout)
        return result

    def _succeeded(self, run: _Run, step: StepSpec, result: Any, text: str) -> None:
        run.results[step.name] = result
        run.outcome = text
        self._fire(run, "succeed")

    def _compensated(self, run: _Run) -> None:
        run.outcome = None
        self._fire(run, "succeed")

    def _encode_result(self, run: _Run, step: StepSpec, result: Any) -> str:
        try:
            return codec.dumps(result)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                run.defn.spec.name, run.saga_id, step.name, result, str(exc)
            ) from exc

    def _failed(self, run: _Run, retry: Retry, error: Exception, compensation: bool) -> None:
        run.failures += 1
        run.outcome = _describe(error)
        if not isinstance(error, _FINAL) and retry.should_retry(error, run.failures):
            run.due_at = self._clock() + retry.delay(run.failures)
            self._fire(run, "retry")
            return
        if compensation:
            run.comp_failed = True
        elif run.error is None:
            run.error = run.outcome
        self._fire(run, "fail")

    def _fire(self, run: _Run, trigger: str) -> None:
        run.defn.machine.fire(run, trigger)
        if run.tx is None:
            self._probe("after_commit", run)

    def _probe(self, point: str, run: _Run) -> None:
        if self.hooks is not None:
            self.hooks.point(point, run.saga_id, run.state, run.attempt)

    def _persist(self, run: _Run, trigger: str, source: str, dest: str) -> None:
        """Record the transition ``source --trigger--> dest`` in one transaction."""
        plan = run.defn.machine.record(trigger, source, dest)
        now = self._clock()
        seq = run.seq + 1
        saga_id = run.saga_id
        failed = plan.outcome in _FAILURES
        outcome = run.outcome
        entries = [
            _entry(
                saga_id,
                seq,
                plan.step,
                plan.outcome,
                run.attempt,
                None if failed else outcome,
                outcome if failed else None,
                now,
            )
        ]
        attempt = run.attempt + 1 if trigger == "retry" else 1
        if plan.entered is None:
            attempt = 0
        else:
            seq += 1
            entries.append(
                _entry(saga_id, seq, plan.entered_step, plan.entered, attempt, None, None, now)
            )
        changes = {
            "status": plan.status,
            "state": dest,
            "attempt": attempt,
            "seq": seq,
            "error": run.error,
            "due_at": run.due_at if trigger == "retry" else None,
            "updated_at": now,
        }
        self._probe("before_commit", run)
        if run.tx is not None:
            run.tx.advance(saga_id, run.seq, changes, entries)
        else:
            self.store.advance(saga_id, run.seq, changes, entries)
        run.seq = seq
        run.attempt = attempt
        if trigger != "retry":
            run.failures = 0

    def _snapshot(self, run: _Run) -> SagaRun:
        status = (
            SagaStatus(run.state)
            if run.defn.machine.is_terminal(run.state)
            else SagaStatus.COMPENSATING
            if run.defn.machine.state(run.state).kind == "compensation"
            else SagaStatus.STARTED
        )
        spec = run.defn.spec
        return SagaRun(
            saga_id=run.saga_id,
            name=spec.name,
            version=spec.version,
            status=status,
            state=run.state,
            results=dict(run.results),
            error=run.error,
        )


def _entry(
    saga_id: str,
    seq: int,
    step: str | None,
    status: str,
    attempt: int,
    result: str | None,
    error: str | None,
    at: float,
) -> dict[str, Any]:
    """One log row, as the store writes it."""
    return {
        "saga_id": saga_id,
        "seq": seq,
        "step": step,
        "status": status,
        "attempt": attempt,
        "result": result,
        "error": error,
        "at": at,
    }


def _results_from_log(rows: list[LogRow], spec: SagaSpec | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for r in rows:
        if r.status == EntryStatus.COMPLETED:
            results[r.step] = _decode_result(r, spec)
    return results


def _decode_result(row: LogRow, spec: SagaSpec | None) -> Any:
    result_type = None
    if spec is not None:
        try:
            result_type = spec.step(row.step).result_type
        except KeyError:
            result_type = None
    return codec.loads(row.result, result_type)


def _entry_from_row(r: LogRow, spec: SagaSpec | None) -> LogEntry:
    return LogEntry(
        seq=r.seq,
        step=r.step,
        status=EntryStatus(r.status),
        attempt=r.attempt,
        result=_decode_result(r, spec) if r.status == EntryStatus.COMPLETED else None,
        error=r.error,
        at=datetime.fromtimestamp(r.at, UTC),
    )
