"""Run a user's saga under injected failures and simulated crashes, on a real database.

Failures are injected into the saga's real handlers through the engine's
``Hooks``: an injected failure raises before the handler runs, exactly as a
service call that fails would. A simulated crash raises ``SimulatedCrash`` (a
``BaseException``, so no handler swallows it) at a chosen point; the harness
then drops that engine, as a dead process would, and resumes the saga in a
fresh engine over the same database.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from statesaga.definition import Saga
from statesaga.engine import Hooks, LogEntry, SagaEngine, SagaStatus

CrashPointName = Literal["before_handler", "before_commit", "after_commit"]
CRASH_POINTS: tuple[CrashPointName, ...] = ("before_handler", "before_commit", "after_commit")


class InjectedFault(Exception):
    """The default error an injected failure raises."""


class SimulatedCrash(BaseException):
    """Raised at a crash point to stop the engine as a killed process would."""


@attrs.frozen
class Fault:
    """What happens to one step or compensation.

    Attributes:
        times: how many attempts fail before one succeeds; ``None`` fails every attempt.
        error: the exception type raised.
    """

    times: int | None = 1
    error: type[Exception] = InjectedFault

    @property
    def permanent(self) -> bool:
        """Whether every attempt fails."""
        return self.times is None


@attrs.frozen
class Crash:
    """Where one simulated crash happens.

    Attributes:
        point: ``before_handler`` (the handler has not run), ``before_commit``
            (the handler ran, its outcome is not recorded) or ``after_commit``
            (the transition is recorded).
        state: the FSM state (step or compensation name) at which to crash;
            ``None`` for the first state that reaches ``point``.
        occurrence: crash the n-th time ``point`` is reached in ``state``.
    """

    point: CrashPointName
    state: str | None = None
    occurrence: int = 1


@attrs.frozen
class Call:
    """One handler invocation the harness saw (including those it made fail)."""

    state: str
    attempt: int
    args: tuple[Any, ...]
    injected: bool


@attrs.frozen
class Outcome:
    """What a harness run produced.

    Attributes:
        saga_id: the saga's id.
        status: its final status.
        results: its step results.
        history: its log, oldest first.
        crashed: whether the simulated crash happened (and the saga was resumed).
        calls: every handler invocation, in order, with its arguments.
    """

    saga_id: str
    status: SagaStatus
    results: Mapping[str, Any]
    history: list[LogEntry]
    crashed: bool
    calls: list[Call]


class _Injector(Hooks):
    def __init__(
        self, plan: Mapping[str, Fault], crash: Crash | None, failed: Counter[str]
    ) -> None:
        self.plan = plan
        self.crash = crash
        # Injected failures the saga log has recorded, per state: a crash
        # before the commit loses the record, so the attempt is not counted.
        self.failed = failed
        self.pending: str | None = None
        self.seen: Counter[str] = Counter()
        self.crashed = False
        self.calls: list[Call] = []

    def _maybe_crash(self, point: str, state: str) -> None:
        crash = self.crash
        if self.crashed or crash is None or crash.point != point:
            return
        if crash.state is not None and crash.state != state:
            return
        self.seen[state] += 1
        if crash.state is None or self.seen[state] == crash.occurrence:
            self.crashed = True
            self.pending = None  # the failure it was about to record is lost
            raise SimulatedCrash(f"simulated crash at {point} of {state}")

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        self._maybe_crash("before_handler", state)
        fault = self.plan.get(state)
        inject = fault is not None and (fault.times is None or self.failed[state] < fault.times)
        self.calls.append(Call(state, attempt, args[1:], inject))
        if inject:
            assert fault is not None
            self.pending = state
            raise fault.error(f"injected failure of {state} (attempt {attempt})")
        return fn(*args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "before_commit":
            self._maybe_crash(point, state)
        elif point == "after_commit" and self.pending is not None:
            self.failed[self.pending] += 1
            self.pending = None
        if point == "after_commit":
            self._maybe_crash(point, state)


class SagaHarness:
    """Runs one saga definition under failure plans and crashes on a real database.

    Args:
        saga: the saga, as a class or an instance (the same instance serves the
            crashed engine and the one that resumes, as real services outlive a
            crashed process).
        url: the database; a temporary SQLite file if omitted.
    """

    def __init__(self, saga: type[Saga] | Saga, url: str | None = None) -> None:
        self.saga = saga() if isinstance(saga, type) else saga
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if url is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="statesaga-")
            url = f"sqlite:///{os.path.join(self._tmpdir.name, 'sagas.db')}"
        self.url = url
        self.engine = self._engine()
        self._injector = _Injector({}, None, Counter())

    def _engine(self) -> SagaEngine:
        engine = SagaEngine(self.url, sleep=lambda _s: None)
        engine.register(self.saga)
        return engine

    def run(
        self,
        input: Any = None,
        *,
        plan: Mapping[str, Fault] | None = None,
        crash: Crash | None = None,
        saga_id: str | None = None,
        resume: bool = True,
    ) -> Outcome:
        """Run the saga under ``plan`` (faults by step or compensation name), with
        at most one simulated ``crash``, after which a fresh engine resumes it.

        With ``resume=False`` the crashed saga is left as the crash left it (to
        look at the database in between); ``resume(saga_id)`` continues it.
        """
        plan = dict(plan or {})
        unknown = set(plan) - {st.name for st in type(self.saga).machine.states}
        if unknown:
            raise ValueError(f"plan names {sorted(unknown)}, which are not steps or compensations")
        saga_id = saga_id or uuid.uuid4().hex
        self._injector = _Injector(plan, crash, Counter())
        self.engine.hooks = self._injector
        try:
            self.engine.run(self.saga, input, saga_id=saga_id)
        except SimulatedCrash:
            # The process "died": drop its engine; a fresh one takes over.
            self.engine.store.engine.dispose()
            self.engine = self._engine()
            if resume:
                return self.resume(saga_id)
        finally:
            self.engine.hooks = None
        return self._outcome(saga_id)

    def resume(self, saga_id: str) -> Outcome:
        """Resume a saga that a crash stopped, with the plan it ran under."""
        self.engine.hooks = self._injector
        try:
            self.engine.resume(saga_id)
        finally:
            self.engine.hooks = None
        return self._outcome(saga_id)

    def _outcome(self, saga_id: str) -> Outcome:
        final = self.engine.get(saga_id)
        return Outcome(
            saga_id=saga_id,
            status=final.status,
            results=final.results,
            history=self.engine.history(saga_id),
            crashed=self._injector.crashed,
            calls=self._injector.calls,
        )

    def close(self) -> None:
        """Release the database (and delete the temporary one)."""
        self.engine.store.engine.dispose()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> SagaHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
