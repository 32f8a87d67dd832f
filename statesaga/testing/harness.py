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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import attrs

from statesaga._definition import Saga
from statesaga._engine import SagaEngine
from statesaga._errors import StateSagaError
from statesaga._runner import Hooks
from statesaga._status import SagaStatus
from statesaga._views import LogEntry
from statesaga.testing.invariants import check_saga, fail, format_timeline, outcomes

CrashPointName = Literal["before_handler", "before_commit", "after_commit"]
CRASH_POINTS: tuple[CrashPointName, ...] = ("before_handler", "before_commit", "after_commit")


class InjectedFault(StateSagaError, RuntimeError):
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
class Scenario:
    """One thing that can happen to a saga: failures, a crash, duplicate starts.

    Attributes:
        plan: faults by step or compensation name (others succeed).
        crash: at most one simulated crash, after which a fresh engine resumes.
        duplicates: how many times the same start request is delivered again
            (once right after the crash, if there is one, and at the end).
    """

    plan: Mapping[str, Fault] = attrs.field(factory=dict)
    crash: Crash | None = None
    duplicates: int = 0


@attrs.frozen
class Call:
    """One handler invocation the harness saw (including those it made fail).

    Attributes:
        state: the step or compensation.
        attempt: its attempt number.
        args: what the handler got after ``self``: ``(ctx,)`` or ``(ctx, result)``.
        injected: whether the harness made it fail.
    """

    state: str
    attempt: int
    args: tuple[Any, ...]
    injected: bool


@attrs.frozen
class Outcome:
    """What a harness run produced.

    Attributes:
        saga_id: the saga's id.
        scenario: what the harness did to it.
        status: its final status.
        results: its step results, as stored.
        history: its log, oldest first.
        crashed: whether the simulated crash happened (and the saga was resumed).
        calls: every handler invocation, in order.
        returns: what each step's handler last returned, by step name.
        duplicates_created: for each duplicate start, whether it created a saga
            (it never should).
        effects: what the run did to the outside world, as counted by the
            harness's ``effects`` function (empty without one).
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


class _Injector(Hooks):
    """Injects a scenario's faults and crash through the engine's hooks."""

    def __init__(self, plan: Mapping[str, Fault], crash: Crash | None) -> None:
        self.plan = plan
        self.crash = crash
        # Injected failures the saga log has recorded, per state: a crash
        # before the commit loses the record, so that attempt does not count.
        self.failed: Counter[str] = Counter()
        self.pending: str | None = None
        self.seen: Counter[str] = Counter()
        self.crashed = False
        self.calls: list[Call] = []
        self.returns: dict[str, Any] = {}

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
        result = fn(*args)
        if len(args) == 2:  # a step (compensations get the result too)
            self.returns[state] = result
        return result

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "before_commit":
            self._maybe_crash(point, state)
            return
        if self.pending is not None:
            self.failed[self.pending] += 1
            self.pending = None
        self._maybe_crash(point, state)


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
    """

    def __init__(
        self,
        saga: type[Saga] | Saga,
        url: str | None = None,
        effects: Callable[[], Iterable[str] | Mapping[str, int]] | None = None,
    ) -> None:
        self.saga = saga() if isinstance(saga, type) else saga
        self.saga_type = type(self.saga)
        self._effects = effects
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if url is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="statesaga-")
            url = f"sqlite:///{os.path.join(self._tmpdir.name, 'sagas.db')}"
        self.url = url
        self.engine = self._engine()
        self._injector = _Injector({}, None)

    def _engine(self) -> SagaEngine:
        engine = SagaEngine(self.url, sleep=lambda _s: None)
        engine.register(self.saga)
        return engine

    def _count_effects(self) -> Counter[str]:
        return Counter(self._effects()) if self._effects is not None else Counter()

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
        look at the database in between); ``resume(saga_id)`` continues it.
        """
        if scenario is None:
            scenario = Scenario(dict(plan or {}), crash, duplicates)
        states = {st.name for st in self.saga_type.machine.states}
        unknown = set(scenario.plan) - states
        if unknown:
            raise ValueError(
                f"the plan names {sorted(unknown)}, which are not steps or compensations "
                f"of {self.saga_type.spec.key}"
            )
        saga_id = saga_id or uuid.uuid4().hex
        self._scenario = scenario
        self._input = input
        self._before = self._count_effects()
        self._duplicates: list[bool] = []
        self._injector = _Injector(scenario.plan, scenario.crash)
        self.engine.hooks = self._injector
        try:
            self.engine.run(self.saga, input, saga_id=saga_id)
        except SimulatedCrash:
            # The process "died": drop its engine; a fresh one takes over.
            self.engine.close()
            self.engine = self._engine()
            if scenario.duplicates:
                self._deliver_duplicate(saga_id)
            if resume:
                return self.resume(saga_id)
        finally:
            self.engine.hooks = None
        return self._finish(saga_id)

    def resume(self, saga_id: str) -> Outcome:
        """Resume a saga that a crash stopped, under the scenario it ran in."""
        self.engine.hooks = self._injector
        try:
            self.engine.resume(saga_id)
        finally:
            self.engine.hooks = None
        return self._finish(saga_id)

    def _deliver_duplicate(self, saga_id: str) -> None:
        self.engine.hooks = self._injector
        try:
            self._duplicates.append(
                self.engine.run(self.saga, self._input, saga_id=saga_id).created
            )
        finally:
            self.engine.hooks = None

    def _finish(self, saga_id: str) -> Outcome:
        final = self.engine.get(saga_id)
        if final.status.is_terminal:
            while len(self._duplicates) < self._scenario.duplicates:
                self._deliver_duplicate(saga_id)
        effects = self._count_effects()
        effects.subtract(self._before)
        return Outcome(
            saga_id=saga_id,
            scenario=self._scenario,
            status=final.status,
            results=final.results,
            history=self.engine.history(saga_id),
            crashed=self._injector.crashed,
            calls=list(self._injector.calls),
            returns=dict(self._injector.returns),
            duplicates_created=list(self._duplicates),
            effects=+effects,
        )

    def check(self, outcome: Outcome) -> None:
        """Check every invariant on one outcome.

        Beyond ``check_saga`` (terminal status, completion, reverse-order
        compensation exactly once, nothing compensated that never completed):
        duplicate starts created nothing; each compensation was handed exactly
        what its step returned; and no compensation failed for good unless the
        scenario made it.

        Raises:
            InvariantViolation: with the saga's log as a timeline.
        """
        spec = self.saga_type.spec
        machine = self.saga_type.machine
        history, status = outcome.history, outcome.status
        check_saga(spec, status, history)
        if any(outcome.duplicates_created):
            raise fail("a duplicate start request created a second saga", history, status)
        for call in outcome.calls:
            info = machine.state(call.state)
            if info.kind != "compensation" or call.injected:
                continue
            assert info.step is not None
            expected = outcome.returns.get(info.step)
            if call.args[1] != expected:
                raise fail(
                    f"compensation {call.state!r} was handed {call.args[1]!r}, but step "
                    f"{info.step!r} returned {expected!r} (annotate the step's return type so "
                    "its result is rebuilt as that type on resume)",
                    history,
                    status,
                )
        for step_name, entry in outcomes(history):
            if entry.value != "compensation_failed":
                continue
            comp = spec.step(step_name).compensation
            assert comp is not None
            fault = outcome.scenario.plan.get(comp.name)
            planned = fault is not None and (
                fault.times is None or fault.times >= comp.retry.max_attempts
            )
            if not planned:
                errors = [e.error for e in history if e.step == step_name and e.error]
                raise fail(
                    f"compensation {comp.name!r} failed for good although the scenario let it "
                    f"succeed: {errors[-1] if errors else 'no error recorded'}",
                    history,
                    status,
                )

    def check_against_baseline(self, input: Any, scenario: Scenario) -> Outcome:
        """Run ``scenario`` and the same failures without crash or duplicates, check
        both, and require the same outcome: status, completions and compensations
        (attempt numbers aside) and the same effects on the outside world.

        Returns:
            The scenario's outcome.
        """
        baseline = self.run(input, Scenario(scenario.plan))
        self.check(baseline)
        outcome = self.run(input, scenario)
        self.check(outcome)
        if outcome.status is not baseline.status or outcomes(outcome.history) != outcomes(
            baseline.history
        ):
            raise fail(
                f"with {_describe(scenario)} the saga ended {outcome.status.value}; without the "
                f"crash and duplicates it ended {baseline.status.value} with this log:\n"
                f"{format_timeline(baseline.history)}",
                outcome.history,
                outcome.status,
            )
        if outcome.effects != baseline.effects:
            raise fail(
                f"with {_describe(scenario)} the services saw {dict(outcome.effects)}; without "
                f"the crash and duplicates they saw {dict(baseline.effects)} (a handler whose "
                "effect is not keyed by ctx.idempotency_key, or not idempotent, acts twice "
                "when it runs again)",
                outcome.history,
                outcome.status,
            )
        return outcome

    def close(self) -> None:
        """Release the database (and delete the temporary one)."""
        self.engine.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> SagaHarness:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _describe(scenario: Scenario) -> str:
    parts = []
    if scenario.crash is not None:
        c = scenario.crash
        parts.append(f"a crash {c.point} of {c.state or 'the first state'} (#{c.occurrence})")
    if scenario.duplicates:
        parts.append(f"{scenario.duplicates} duplicate start(s)")
    return " and ".join(parts) or "no crash"
