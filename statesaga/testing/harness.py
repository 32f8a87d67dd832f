"""Run a user's saga under injected failures and simulated crashes, on a real database.

``SagaHarness`` carries out a ``Scenario`` (see ``_scenario`` for what its
crash points mean) through an injector on the engine's hooks (see
``_injection``), resumes the saga after each crash and gathers the run's
``Outcome``.

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
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from sqlalchemy.engine import Engine

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._views import SagaRun
from statesaga.store import make_engine
from statesaga.testing._checks import examine
from statesaga.testing._injection import Dispatch, Injector, SimulatedCrash
from statesaga.testing._outcome import Outcome
from statesaga.testing._runtime import EventLoop, VirtualClock
from statesaga.testing._scenario import Crash, Fault, Scenario


@attrs.define
class _Run:
    """One harness run in progress: what it was asked and what it has seen."""

    saga_id: str
    input: Any
    scenario: Scenario
    injector: Injector
    effects_before: Counter[str]
    state_before: Any
    duplicates: list[bool] = attrs.Factory(list)
    crashed_after: list[int] = attrs.Factory(list)


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
        self._clock = VirtualClock()
        self._async = any(
            s.is_async or (s.compensation is not None and s.compensation.is_async)
            for s in self.saga_type.spec.steps
        )
        self._loop = EventLoop(loop)
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
            injector=Injector(scenario.plan, scenario.crashes),
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
                    engine.hooks = Dispatch({sid: run.injector for sid, run in runs.items()})
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
        what its step returned (``NOT_COMPLETED`` if it failed in doubt); no
        compensation failed for good unless the scenario made it; and, with
        ``state``, a saga that ended ``failed`` left the services' state as it
        found it.

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
