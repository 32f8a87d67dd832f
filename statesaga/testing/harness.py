"""Run a user's saga under injected failures and simulated crashes, on a real database.

Failures are injected into the saga's real handlers through the engine's
``Hooks``: an injected failure raises before the handler runs, exactly as a
service call that fails would. A simulated crash raises ``SimulatedCrash`` (a
``BaseException``, so no handler swallows it) at a crash point; the harness
then drops that engine, as a dead process would, and resumes the saga in a
fresh engine over the same database.

A crash point is named after the handler whose outcome it surrounds, and
means one thing everywhere (scenarios, strategies, messages):

- ``before_handler`` of ``h``: the saga is recorded in ``h``; its handler has
  not run;
- ``before_commit`` of ``h``: the handler ran (or failed); its outcome is not
  recorded, so ``h`` runs again on resume;
- ``after_commit`` of ``h``: its outcome is recorded; whatever comes next has
  not begun.

The harness keeps what a real deployment keeps across a crash and nothing
else: the database and the services (the same saga instance). It holds two
engines, as two processes: a crash sets the engine it happened in aside and
the other one resumes the saga, reading everything from the database (an
engine keeps nothing of a saga between runs, so the one set aside serves as
the fresh process next time, without the cost of opening a new one). Every
run gets a saga id of its own, so scenarios share one database without
resetting it. Time is virtual: retry delays advance the engines' clock
instead of sleeping, so runs are fast and their logs the same every time.

Async sagas run on one event loop for all of a harness's runs, through
``engine.arun``, as in an application server: async handlers on the loop,
database work and sync handlers in the engine's worker thread.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, Literal

import attrs
from sqlalchemy.engine import Engine

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._errors import StateSagaError
from statesaga._handlers import Hooks
from statesaga._status import SagaStatus
from statesaga._views import LogEntry, SagaRun
from statesaga.store import make_engine
from statesaga.testing._checks import examine

CrashPointName = Literal["before_handler", "before_commit", "after_commit"]
CRASH_POINTS: tuple[CrashPointName, ...] = ("before_handler", "before_commit", "after_commit")

#: The virtual clock's start (any fixed instant: logs read the same on every run).
_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class InjectedFault(StateSagaError, RuntimeError):
    """The default error an injected failure raises."""


class SimulatedCrash(BaseException):
    """Raised at a crash point to stop the engine as a killed process would."""


@attrs.frozen
class Fault:
    """What happens to one step or compensation.

    Attributes:
        times: how many attempts fail before one succeeds; ``None`` fails every attempt.
        error: the exception type raised (give your application's own types so
            that a step's ``retry_on`` applies to them).
    """

    times: int | None = 1
    error: type[Exception] = attrs.field(default=InjectedFault, repr=lambda e: e.__qualname__)


@attrs.frozen
class Crash:
    """Where one simulated crash happens.

    Attributes:
        point: ``before_handler`` (the handler of ``state`` has not run),
            ``before_commit`` (it ran; its outcome is not recorded, so it runs
            again on resume) or ``after_commit`` (its outcome is recorded).
        state: the step or compensation whose handler the point surrounds;
            ``None`` for the first handler that reaches ``point``.
        occurrence: crash the n-th time ``point`` is reached for ``state`` in
            the scenario (the n-th attempt, counting attempts after a resume).
    """

    point: CrashPointName
    state: str | None = None
    occurrence: int = 1

    def fires_at(self, point: str, state: str, occurrence: int) -> bool:
        """Whether this crash happens on reaching ``point`` of ``state`` for the
        ``occurrence``-th time."""
        if point != self.point:
            return False
        return self.state is None or (self.state == state and self.occurrence == occurrence)


@attrs.frozen
class Scenario:
    """One thing that can happen to a saga: failures, crashes, duplicate starts.

    Attributes:
        plan: faults by step or compensation name (others succeed).
        crash: at most one simulated crash, after which a fresh engine resumes.
        duplicates: how many times the same start request is delivered again
            (once right after the crash, if there is one, the others at the end).
        second_crash: a crash of the engine that resumed after ``crash``
            (occurrences count over the whole scenario).
    """

    plan: Mapping[str, Fault] = attrs.field(factory=dict)
    crash: Crash | None = None
    duplicates: int = 0
    second_crash: Crash | None = None

    @property
    def crashes(self) -> tuple[Crash, ...]:
        """The scenario's crashes, in the order they happen."""
        return tuple(c for c in (self.crash, self.second_crash) if c is not None)


@attrs.frozen
class Call:
    """One handler invocation the harness saw (including those it made fail).

    Attributes:
        state: the step or compensation.
        attempt: its attempt number.
        args: what the handler got after ``self``: ``(ctx,)`` or ``(ctx, result)``.
        injected: whether the harness made it fail.
        error: what the handler itself raised (``Type: message``), if it did.
    """

    state: str
    attempt: int
    args: tuple[Any, ...]
    injected: bool
    error: str | None = None

    @property
    def ran(self) -> bool:
        """Whether the handler ran to its end (not injected, raised nothing)."""
        return not self.injected and self.error is None


@attrs.frozen
class Outcome:
    """What a harness run produced.

    Attributes:
        saga_id: the saga's id.
        scenario: what the harness did to it.
        status: its final status.
        results: its step results, as stored.
        history: its log, oldest first.
        crashed: whether a simulated crash happened (and the saga was resumed).
        calls: every handler invocation, in order.
        returns: what each step's handler last returned, by step name.
        duplicates_created: for each duplicate start, whether it created a saga
            (it never should).
        effects: what the run did to the outside world, as counted by the
            harness's ``effects`` function (empty without one).
        reached: every crash point the run reached, in order, each as the
            ``Crash`` that would happen there (the crashes that did included).
        crashes: the crashes that happened.
        crashed_after: for each crash, how many log entries were committed before it.
        state_before: the harness's ``state()`` before the run (``None`` without one).
        state_after: the harness's ``state()`` after the run.
    """

    saga_id: str
    scenario: Scenario
    status: SagaStatus
    results: Mapping[str, Any]
    history: list[LogEntry]
    crashed: bool
    calls: list[Call]
    returns: Mapping[str, Any]
    duplicates_created: list[bool]
    effects: Counter[str]
    reached: tuple[Crash, ...] = ()
    crashes: tuple[Crash, ...] = ()
    crashed_after: tuple[int, ...] = ()
    state_before: Any = None
    state_after: Any = None

    def ran(self) -> Counter[str]:
        """How many times each handler ran to its end."""
        return Counter(c.state for c in self.calls if c.ran)


class _Injector(Hooks):
    """Injects a scenario's faults and crashes through the engine's hooks, and
    records every call and every crash point reached."""

    def __init__(self, plan: Mapping[str, Fault], crashes: Iterable[Crash]) -> None:
        self.plan = plan
        self.pending_crashes = list(crashes)
        # Injected failures the saga log has recorded, per state: a crash
        # before the commit loses the record, so that attempt does not count.
        self.failed: Counter[str] = Counter()
        self.pending: str | None = None
        self.leaving: str | None = None  # whose outcome the next commit records
        self.counts: Counter[tuple[str, str]] = Counter()
        self.reached: list[Crash] = []
        self.crashes: list[Crash] = []
        self.calls: list[Call] = []
        self.returns: dict[str, Any] = {}

    def _reach(self, point: CrashPointName, state: str) -> None:
        self.counts[point, state] += 1
        here = Crash(point, state, self.counts[point, state])
        self.reached.append(here)
        if self.pending_crashes and self.pending_crashes[0].fires_at(point, state, here.occurrence):
            self.pending_crashes.pop(0)
            self.crashes.append(here)
            self.pending = None  # the failure it was about to record is lost
            self.leaving = None
            raise SimulatedCrash(f"simulated crash at {point} of {state}")

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        self._reach("before_handler", state)
        fault = self.plan.get(state)
        if fault is not None and (fault.times is None or self.failed[state] < fault.times):
            self.calls.append(Call(state, attempt, args[1:], injected=True))
            self.pending = state
            # Extension point for in-doubt faults (issue #10): run ``fn`` first,
            # then raise, once the engine compensates a step that failed in doubt.
            raise fault.error(f"injected failure of {state} (attempt {attempt})")
        index = len(self.calls)
        self.calls.append(Call(state, attempt, args[1:], injected=False))
        try:
            result = fn(*args)
        except Exception as exc:
            self._raised(index, exc)
            raise
        if inspect.isawaitable(result):
            # The runner awaits what the hook returns: hand it a coroutine that
            # records the handler's real result, not the coroutine object.
            return self._settle(index, len(args) == 2, result)
        self._returned(index, len(args) == 2, result)
        return result

    async def _settle(self, index: int, is_step: bool, pending: Awaitable[Any]) -> Any:
        try:
            result = await pending
        except Exception as exc:
            self._raised(index, exc)
            raise
        self._returned(index, is_step, result)
        return result

    def _raised(self, index: int, exc: Exception) -> None:
        self.calls[index] = attrs.evolve(self.calls[index], error=f"{type(exc).__name__}: {exc}")

    def _returned(self, index: int, is_step: bool, result: Any) -> None:
        if is_step:  # compensations get the result too
            self.returns[self.calls[index].state] = result

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "before_commit":
            # ``state`` is the handler's: the commit records its outcome.
            self.leaving = state
            self._reach("before_commit", state)
            return
        # ``state`` is the one entered; the crash point belongs to the one left.
        left, self.leaving = self.leaving, None
        if self.pending is not None:
            self.failed[self.pending] += 1
            self.pending = None
        if left is not None:
            self._reach("after_commit", left)


class _Clock:
    """Virtual time: ``sleep`` moves it on at once."""

    def __init__(self) -> None:
        self.now = _EPOCH

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class _Loop:
    """The one event loop a harness runs async sagas on: its own, or the
    caller's (running in another thread) for ``aexplore``."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._runner: asyncio.Runner | None = None

    def run(self, make: Callable[[], Coroutine[Any, Any, SagaRun]]) -> SagaRun:
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(make(), self._loop).result()
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(make())

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


@attrs.define
class _Run:
    """One harness run in progress: what it was asked and what it has seen."""

    saga_id: str
    input: Any
    scenario: Scenario
    injector: _Injector
    effects_before: Counter[str]
    state_before: Any
    duplicates: list[bool] = attrs.Factory(list)
    crashed_after: list[int] = attrs.Factory(list)


class _Dispatch(Hooks):
    """The hooks of several runs at once (``recover`` resumes them all)."""

    def __init__(self, runs: Mapping[str, _Run]) -> None:
        self.runs = runs

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        run = self.runs.get(saga_id)
        if run is None:
            return fn(*args)
        return run.injector.call(saga_id, state, attempt, fn, args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        run = self.runs.get(saga_id)
        if run is not None:
            run.injector.point(point, saga_id, state, attempt)


class SagaHarness:
    """Runs one saga definition under scenarios on a real database.

    Args:
        saga: the saga, as a class or an instance. The same instance serves the
            crashed engine and the one that resumes, as real services outlive a
            crashed process.
        url: the database; a temporary SQLite file if omitted.
        effects: optional; returns what the saga's services have done so far,
            e.g. ``lambda: Counter(op for op, _ in services.effects)``. The
            harness records the difference each run makes, so a crash that makes
            a service act twice shows up.
        state: optional; returns a snapshot of the services' observable state
            (balances, stock, open orders), compared with ``==``. Mappings
            whose values are numbers compare by how much each value changed,
            so the snapshot may be cumulative (see ``explore``).
        setup: optional; called once with the database's SQLAlchemy ``Engine``
            to create the application's own tables (for transactional steps).
        loop: the event loop async handlers run on, running in another
            thread; by default the harness runs one of its own.
    """

    def __init__(
        self,
        saga: type[Saga] | Saga,
        url: str | None = None,
        effects: Callable[[], Iterable[str] | Mapping[str, int]] | None = None,
        *,
        state: Callable[[], Any] | None = None,
        setup: Callable[[Engine], Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.saga = saga() if isinstance(saga, type) else saga
        self.saga_type = type(self.saga)
        self._effects = effects
        self._state = state
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if url is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="statesaga-")
            url = f"sqlite:///{os.path.join(self._tmpdir.name, 'sagas.db')}"
        self.url = url
        self.db = make_engine(url)
        self._clock = _Clock()
        self._async = any(
            s.is_async or (s.compensation is not None and s.compensation.is_async)
            for s in self.saga_type.spec.steps
        )
        self._loop = _Loop(loop)
        self._engines = [self._engine(), self._engine()]
        self._stranded: dict[str, _Run] = {}
        self.mark_crashes = True
        if setup is not None:
            setup(self.db)

    @property
    def engine(self) -> SagaEngine:
        """The engine the next run starts on (the one a crash did not stop)."""
        return self._engines[0]

    def _engine(self) -> SagaEngine:
        engine = SagaEngine(self.db, sleep=self._clock.sleep, clock=self._clock)
        engine.register(self.saga)
        return engine

    def restart(self) -> SagaEngine:
        """Stop the current engine as a crashed process stops; the other takes
        over. Returns the engine that takes over."""
        self.engine.hooks = None
        self._engines.reverse()
        return self.engine

    def _count_effects(self) -> Counter[str]:
        return Counter(self._effects()) if self._effects is not None else Counter()

    def _snapshot(self) -> Any:
        return self._state() if self._state is not None else None

    def _drive(self, run: _Run, start: bool) -> SagaRun:
        """Start (``start``) or resume the run's saga on the current engine, its
        async handlers on the harness's loop."""
        engine = self.engine
        engine.hooks = run.injector
        try:
            if not self._async:
                if start:
                    return engine.run(self.saga, run.input, run.saga_id)
                return engine.resume(run.saga_id)
            if start:
                return self._loop.run(lambda: engine.arun(self.saga, run.input, run.saga_id))
            return self._loop.run(lambda: engine.aresume(run.saga_id))
        finally:
            engine.hooks = None

    def run(
        self,
        input: Any = None,
        scenario: Scenario | None = None,
        *,
        plan: Mapping[str, Fault] | None = None,
        crash: Crash | None = None,
        duplicates: int = 0,
        saga_id: str | None = None,
        resume: bool = True,
    ) -> Outcome:
        """Run the saga once under a scenario (or its parts given one by one).

        With ``resume=False`` a crashed saga is left as the crash left it (to
        look at the database in between); ``resume(saga_id)`` continues it, or
        ``recover()`` continues every saga left so.
        """
        if scenario is None:
            scenario = Scenario(dict(plan or {}), crash, duplicates)
        states = {st.name for st in self.saga_type.machine.states}
        named = set(scenario.plan) | {c.state for c in scenario.crashes if c.state is not None}
        unknown = named - states
        if unknown:
            raise ValueError(
                f"the scenario names {sorted(unknown)}, which are not steps or compensations "
                f"of {self.saga_type.spec.key}"
            )
        run = _Run(
            saga_id=saga_id or uuid.uuid4().hex,
            input=input,
            scenario=scenario,
            injector=_Injector(scenario.plan, scenario.crashes),
            effects_before=self._count_effects(),
            state_before=self._snapshot(),
        )
        try:
            final = self._drive(run, start=True)
        except SimulatedCrash:
            self._after_crash(run)
            if scenario.duplicates:
                self._deliver_duplicate(run)
            if resume:
                return self._resume(run)
            final = self.engine.get(run.saga_id)
            if not final.status.is_terminal:
                self._stranded[run.saga_id] = run
        return self._finish(run, final)

    def resume(self, saga_id: str) -> Outcome:
        """Resume a saga that a crash stopped (``run(..., resume=False)``), under
        the scenario it ran in (and again after each further crash it has)."""
        run = self._stranded.pop(saga_id, None)
        if run is None:
            raise ValueError(f"saga {saga_id} was not left stranded by this harness")
        return self._resume(run)

    def _resume(self, run: _Run) -> Outcome:
        while True:
            try:
                final = self._drive(run, start=False)
            except SimulatedCrash:
                self._after_crash(run)
                continue
            return self._finish(run, final)

    def recover(self) -> list[Outcome]:
        """Stop the current engine; the other one recovers every saga that runs
        with ``resume=False`` left stranded, each under its own scenario (async
        sagas are resumed one by one on the harness's loop: the engine's
        ``recover`` has no async form).

        Returns:
            Their outcomes. ``effects`` are the whole recovery's, as the sagas
            recover together; their state is not kept (``None``): other runs
            changed it between their start and their recovery.
        """
        runs, self._stranded = self._stranded, {}
        if not runs:
            return []
        effects = self._count_effects()
        while True:
            engine = self.restart()
            try:
                if self._async:
                    for run in runs.values():
                        if not engine.get(run.saga_id).status.is_terminal:
                            self._drive(run, start=False)
                else:
                    engine.hooks = _Dispatch(runs)
                    report = engine.recover()
                    if report.skipped:
                        raise report.skipped[0]
            except SimulatedCrash:
                continue  # the recovering engine crashed too: the other one recovers
            finally:
                engine.hooks = None
            break
        done = [self._finish(run, engine.get(run.saga_id)) for run in runs.values()]
        recovered = self._count_effects()
        recovered.subtract(effects)
        return [
            attrs.evolve(o, effects=+recovered, state_before=None, state_after=None) for o in done
        ]

    def _after_crash(self, run: _Run) -> None:
        self.restart()
        if self.mark_crashes:  # where the crash falls in the log, for messages
            run.crashed_after.append(len(self.engine.history(run.saga_id)))

    def _deliver_duplicate(self, run: _Run) -> None:
        run.duplicates.append(self._drive(run, start=True).created)

    def _finish(self, run: _Run, final: SagaRun) -> Outcome:
        if final.status.is_terminal:
            while len(run.duplicates) < run.scenario.duplicates:
                self._deliver_duplicate(run)
        effects = self._count_effects()
        effects.subtract(run.effects_before)
        injector = run.injector
        return Outcome(
            saga_id=run.saga_id,
            scenario=run.scenario,
            status=final.status,
            results=final.results,
            history=self.engine.history(run.saga_id),
            crashed=bool(injector.crashes),
            calls=list(injector.calls),
            returns=dict(injector.returns),
            duplicates_created=list(run.duplicates),
            effects=+effects,
            reached=tuple(injector.reached),
            crashes=tuple(injector.crashes),
            crashed_after=tuple(run.crashed_after),
            state_before=run.state_before,
            state_after=self._snapshot(),
        )

    def check(self, outcome: Outcome) -> None:
        """Check every invariant on one outcome.

        Beyond ``check_saga`` (terminal status, completion, reverse-order
        compensation exactly once, nothing compensated that never completed):
        duplicate starts created nothing; each compensation was handed exactly
        what its step returned; no compensation failed for good unless the
        scenario made it; and, with ``state``, a saga that ended ``failed``
        left the services' state as it found it.

        Raises:
            InvariantViolation: naming the problem and the likely fix, with the
                saga's log as a timeline.
        """
        found = examine(self.saga_type, outcome, None)
        if found is not None:
            raise found.error()

    def check_against_baseline(self, input: Any, scenario: Scenario) -> Outcome:
        """Run ``scenario`` and the same failures without crash or duplicates, check
        both, and require the same outcome: status, completions and compensations
        (attempt numbers aside), the same effects on the outside world and, with
        ``state``, the same change to the services' state.

        Returns:
            The scenario's outcome.

        Raises:
            InvariantViolation: the scenario in words, what differs, the likely
                fix and both logs.
        """
        baseline = self.run(input, Scenario(scenario.plan))
        self.check(baseline)
        outcome = self.run(input, scenario)
        found = examine(self.saga_type, outcome, baseline)
        if found is not None:
            raise found.error()
        return outcome

    def close(self) -> None:
        """Release the database (and delete the temporary one) and the event loop."""
        for engine in self._engines:
            engine.close()
        self.db.dispose()
        self._loop.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> SagaHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
