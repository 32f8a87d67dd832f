"""Walk a saga's whole failure space and report the smallest counterexample.

``explore`` runs every failure plan of up to ``max_faults`` faults (see
``_space``), each first without a crash — the baseline — and then with a crash
at every crash point that baseline reached (optionally a second crash at
every point the resumed run reached), the start request delivered again while
the saga is stranded and at the end. Each run is checked on its own (the
saga invariants, the undo invariant) and against its baseline (status and
log, effects, state change). Scenarios run smallest first — fewer faults and
crashes before more — so the first counterexample is a smallest one; it is
reported with its scenario in words, what differs, the usual fix and the log.

Nothing is random: the same saga gives the same scenarios in the same order
on every run. A saga whose space is larger than ``max_scenarios`` is sampled
with Hypothesis instead (derandomized, so the same on every run too; the
report says it sampled), and only then is Hypothesis imported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
from sqlalchemy.engine import Engine

from statesaga._definition import Saga
from statesaga.testing._checks import examine, vacuous
from statesaga.testing._outcome import Outcome
from statesaga.testing._report import Counterexample
from statesaga.testing._scenario import Crash, Fault, InjectedFault, Scenario
from statesaga.testing._space import crash_points, failure_plans, path
from statesaga.testing.harness import SagaHarness


@attrs.frozen
class Exploration:
    """What ``explore`` did.

    Attributes:
        saga: the saga's ``name@vversion``.
        scenarios: how many scenarios ran (baselines included).
        space: how many scenarios the failure space holds (for a sampled
            space, estimated from the definition).
        plans: how many failure plans it holds.
        counterexample: the first (smallest) scenario that broke the saga, or ``None``.
        sampled: whether the space was too large and was sampled with Hypothesis.
        seconds: how long it took.
    """

    saga: str
    scenarios: int
    space: int
    plans: int
    counterexample: Counterexample | None
    sampled: bool
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether no scenario broke the saga."""
        return self.counterexample is None

    @property
    def rate(self) -> float:
        """Scenarios per second."""
        return self.scenarios / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        if self.sampled:
            how = f"sampled {self.scenarios} of ~{self.space} scenarios with Hypothesis"
        elif self.ok:
            how = f"ran all {self.scenarios} scenarios of {self.plans} failure plans"
        else:
            how = f"ran {self.scenarios} of {self.space} scenarios"
        verdict = "no counterexample" if self.ok else "stopped at a counterexample"
        return f"explore {self.saga}: {how} in {self.seconds:.1f} s ({self.rate:.0f}/s): {verdict}"


class _Walk:
    """One exploration: the harness, the plans and what has run so far."""

    def __init__(
        self,
        harness: SagaHarness,
        input: Any,
        plans: list[tuple[int, dict[str, Fault]]],
        crashes: int,
        duplicates: bool,
    ) -> None:
        self.harness = harness
        self.saga = harness.saga_type
        self.input = input
        self.plans = plans
        self.crashes = crashes
        self.duplicates = duplicates
        self.baselines: dict[int, Outcome] = {}
        self.ran = 0

    def scenario(
        self, index: int, crash: Crash, last: bool, second: Crash | None = None
    ) -> Scenario:
        """A crash scenario of plan ``index``. The start request comes again
        while the saga is stranded when the crash is before a handler (the other
        crash points leave the same rows in the database as one of those), and
        at the end when the crash is after the last commit (``last``)."""
        again = self.duplicates and (crash.point == "before_handler" or last)
        return Scenario(self.plans[index][1], crash, int(again), second)

    def baseline(self, index: int) -> tuple[Outcome, Counterexample | None]:
        """The plan's run without crash (run once), and its problem, if any."""
        known = self.baselines.get(index)
        if known is not None:
            return known, None
        outcome = self.harness.run(self.input, Scenario(self.plans[index][1]))
        self.ran += 1
        self.baselines[index] = outcome
        found = vacuous(outcome) if not self.plans[index][1] else None
        return outcome, found or examine(self.saga, outcome, None)

    def crash(self, index: int, scenario: Scenario) -> tuple[Outcome, Counterexample | None]:
        """Run ``scenario`` and check it against its plan's baseline; a problem is
        reported without the duplicate starts if it shows without them."""
        base, _ = self.baseline(index)
        outcome = self.harness.run(self.input, scenario)
        self.ran += 1
        found = examine(self.saga, outcome, base)
        if found is None:
            return outcome, None
        # Run it again to report: without the duplicates if it fails without
        # them, and with each crash marked in the log.
        self.harness.mark_crashes = True
        try:
            for again in ([attrs.evolve(scenario, duplicates=0)] if scenario.duplicates else []) + [
                scenario
            ]:
                marked = examine(self.saga, self.harness.run(self.input, again), base)
                if marked is not None:
                    return outcome, marked
        finally:
            self.harness.mark_crashes = False
        return outcome, found

    def exhaustive(self) -> Counterexample | None:
        """Every scenario, tier by tier: a tier holds the scenarios with as many
        faults and crashes together."""
        firsts: dict[int, list[Outcome]] = {}
        for tier in range(max(size for size, _ in self.plans) + self.crashes + 1):
            for index, (size, _) in enumerate(self.plans):
                crashes = tier - size
                if crashes > self.crashes:
                    continue
                if crashes == 0:
                    _, found = self.baseline(index)
                    if found is not None:
                        return found
                elif crashes == 1:
                    reached = self.baselines[index].reached
                    for crash in reached:
                        scenario = self.scenario(index, crash, crash == reached[-1])
                        outcome, found = self.crash(index, scenario)
                        if found is not None:
                            return found
                        if self.crashes > 1:
                            firsts.setdefault(index, []).append(outcome)
                elif crashes == 2:
                    for first in firsts.pop(index, []):
                        after = first.reached[first.reached.index(first.crashes[0]) + 1 :]
                        for second in after:
                            scenario = self.scenario(index, first.crashes[0], False, second)
                            _, found = self.crash(index, scenario)
                            if found is not None:
                                return found
        return None

    def sample(
        self, space: list[tuple[int, int, Crash | None]], examples: int
    ) -> Counterexample | None:
        """Scenarios drawn with Hypothesis from ``space`` (``(tier, plan, crash)``,
        smallest first, so shrinking goes to a smallest one)."""
        try:
            from hypothesis import HealthCheck, given, settings
            from hypothesis import strategies as st
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"the failure space of {self.saga.spec.key} is larger than max_scenarios; "
                "sampling it needs Hypothesis (pip install 'statesaga[test]'), or raise "
                "max_scenarios to run it whole",
                name=exc.name,
            ) from exc

        found: list[Counterexample] = []

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.integers(0, len(space) - 1))
        def probe(i: int) -> None:
            _, index, crash = space[i]
            if crash is None:
                _, problem = self.baseline(index)
            else:
                _, problem = self.crash(index, self.scenario(index, crash, False))
            if problem is not None:
                found.append(problem)
                raise problem.error()

        try:
            probe()
        except AssertionError:
            return found[-1] if found else None
        return None


def _size(saga: type[Saga], plans: Sequence[tuple[int, dict[str, Fault]]], crashes: int) -> int:
    """How many scenarios the space holds, predicted from the definition."""
    total = 0
    for _, plan in plans:
        points = len(crash_points(path(saga, plan))) if crashes else 0
        total += 1 + points + (points * (points + 1) // 2 if crashes > 1 else 0)
    return total


def _sample_space(
    saga: type[Saga], plans: Sequence[tuple[int, dict[str, Fault]]], crashes: int
) -> list[tuple[int, int, Crash | None]]:
    """Every baseline and single-crash scenario, as ``(tier, plan, crash)``, smallest first."""
    space: list[tuple[int, int, Crash | None]] = []
    for index, (size, plan) in enumerate(plans):
        space.append((size, index, None))
        if crashes:
            space += [(size + 1, index, c) for c in crash_points(path(saga, plan))]
    tiers = [t for t, _, _ in space]
    order = sorted(range(len(space)), key=lambda i: (tiers[i], i))
    return [space[i] for i in order]


def explore(
    saga: type[Saga] | Saga,
    input: Any = None,
    *,
    effects: Callable[[], Iterable[str] | Mapping[str, int]] | None = None,
    state: Callable[[], Any] | None = None,
    max_faults: int = 1,
    crashes: int = 1,
    duplicates: bool = True,
    errors: Sequence[type[Exception]] = (InjectedFault,),
    url: str | None = None,
    setup: Callable[[Engine], Any] | None = None,
    max_scenarios: int = 5_000,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Exploration:
    """Run ``saga`` on ``input`` under every scenario of its failure space and
    report the smallest that breaks it.

    The space: every failure plan of up to ``max_faults`` faults (a step or
    compensation failing for good, or failing k times before it succeeds as its
    retry policy allows; a compensation's fault comes with the step failure
    that makes it run; a step that may fail in doubt also acts and then fails
    in doubt, so that its compensation is handed ``NOT_COMPLETED``), each with
    no crash and with one crash at every point the run reaches (``crashes=2``:
    and a second at every point the resumed run reaches), the start request
    delivered again while the saga is stranded and after it ended
    (``duplicates``).

    The checks, on every run: the saga invariants (``check_saga``); duplicate
    starts create nothing; each compensation is handed what its step returned
    (``NOT_COMPLETED`` if it failed in doubt); no compensation fails for good
    unless the plan made it; with ``state``, a saga that ends ``failed`` leaves
    the state as it found it (the undo invariant). Against the run with the
    same faults and no crash: the same status and log, the same ``effects``
    and, for a completed saga, the same change of ``state``. A run without
    faults in which no handler ran to its end is a failure too: it tested
    nothing.

    Args:
        saga: the saga, as a class or an instance (its services are shared by
            every run, as real services outlive a crashed process).
        input: the saga's input.
        effects: returns what the services have done so far, as operation names
            or counts by name (``lambda: Counter(op for op, _ in services.effects)``).
        state: returns a snapshot of the services' observable state
            (``lambda: services.snapshot()``). Runs share the services, so
            snapshots are compared by change: a mapping's number values by how
            much they changed, its other values and other snapshots by before
            and after. Leave out effects that nothing can undo (a sent mail).
        max_faults: faults per run.
        crashes: crashes per run: 0, 1 or 2.
        duplicates: deliver the start request again while the saga is stranded
            (in each scenario that crashes before a handler: every other crash
            point leaves the same rows as one of those) and after it ended.
        errors: the exception types injected faults raise; give your own so that
            ``Retry(retry_on=...)`` applies (one of each retry behaviour is used).
        url: the database; a temporary SQLite file if omitted (the pytest
            plugin's ``statesaga_url`` fixture gives the test database). Each
            scenario runs a saga of its own id, so the database is never reset.
        setup: called once with the database's SQLAlchemy ``Engine`` to create
            the application's own tables.
        max_scenarios: a larger space is sampled (that many scenarios) with
            Hypothesis instead of run whole.
        loop: run async handlers on this event loop (running in another
            thread); ``aexplore`` passes the caller's.

    Returns:
        What ran and the first counterexample, if any (``assert_saga_correct``
        raises it).
    """
    if crashes not in (0, 1, 2):
        raise ValueError(f"crashes must be 0, 1 or 2, got {crashes!r}")
    if max_faults < 0:
        raise ValueError(f"max_faults must be >= 0, got {max_faults!r}")
    started = time.perf_counter()
    saga_type = saga if isinstance(saga, type) else type(saga)
    plans = list(failure_plans(saga_type, list(errors), max_faults))
    space = _size(saga_type, plans, crashes)
    sampled = space > max_scenarios
    with SagaHarness(saga, url, effects, state=state, setup=setup, loop=loop) as harness:
        harness.mark_crashes = False  # a log read per crash; only a counterexample needs it
        walk = _Walk(harness, input, plans, crashes, duplicates)
        if sampled:
            found = walk.sample(_sample_space(saga_type, plans, crashes), max_scenarios)
        else:
            found = walk.exhaustive()
    if found is not None:
        found = attrs.evolve(found, explored=walk.ran - 1)
    return Exploration(
        saga=saga_type.spec.key,
        scenarios=walk.ran,
        space=space,
        plans=len(plans),
        counterexample=found,
        sampled=sampled,
        seconds=time.perf_counter() - started,
    )


async def aexplore(saga: type[Saga] | Saga, input: Any = None, **options: Any) -> Exploration:
    """``explore`` from async code: async handlers run on the calling event loop
    (where the application's async clients live); the rest in a worker thread."""
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(lambda: explore(saga, input, loop=loop, **options))


def assert_saga_correct(saga: type[Saga] | Saga, input: Any = None, **options: Any) -> Exploration:
    """Explore ``saga`` (see ``explore``, which takes the same options) and fail
    with the smallest counterexample if there is one::

        def test_order_saga(statesaga_url):
            services = FakeServices()
            assert_saga_correct(
                OrderSaga(services), OrderRequest("c-1", 10.0), url=statesaga_url,
                effects=lambda: Counter(op for op, _ in services.effects),
                state=services.snapshot,
            )

    Raises:
        InvariantViolation: the counterexample: the scenario in words, what
            went wrong, the likely fix, the log with the crash marked.
    """
    report = explore(saga, input, **options)
    if report.counterexample is not None:
        raise report.counterexample.error()
    return report
