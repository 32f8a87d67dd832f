"""A saga's failure space, read from its definition alone.

For a saga of n steps the scenarios worth running are few and finite: which
step or compensation fails (for good, or k times before it succeeds), where
one crash lands, whether the start request comes again. This module lists
the failure plans in the order ``explore`` runs them (fewest faults first,
then in the order the handlers run) and predicts the path a plan takes, so
that strategies draw only crash points a plan reaches and occurrences that
exist. No database, no Hypothesis.

A compensation runs only after a step failed for good, so a fault in a
compensation comes with the step failure that makes it run; the pair counts
as one fault.

A step that may fail *in doubt* (it has a compensation, and lists errors in
``in_doubt=``, has a ``timeout`` or ``compensate_failed=True``) also gets
faults ``after_acting``: its handler acts, then the attempt fails in doubt,
and its own compensation runs first, handed ``NOT_COMPLETED``. Those come
after the faults that raise before acting, within each number of faults. A
step that cannot fail in doubt gets none: nothing in its definition says its
handler may act and then fail, and its compensation is never handed
``NOT_COMPLETED``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import attrs

from statesaga._definition import Saga
from statesaga._errors import InDoubt, SerializationError, StepTimeout
from statesaga._spec import Retry, StepSpec
from statesaga.testing._scenario import CRASH_POINTS, Crash, Fault

#: Errors after which any step with a compensation fails in doubt, whatever it
#: declares: the runner's rule (``statesaga._runner._in_doubt``), restated for
#: error types; a test pins the two together.
_ALWAYS_IN_DOUBT: tuple[type[BaseException], ...] = (StepTimeout, InDoubt, SerializationError)


@attrs.frozen
class Attempt:
    """One attempt of a handler on a plan's predicted path.

    Attributes:
        state: the step or compensation.
        number: its attempt number.
        ok: whether this attempt succeeds.
        after_acting: whether it fails after its handler acted.
    """

    state: str
    number: int
    ok: bool
    after_acting: bool = False


def handlers(saga: type[Saga]) -> list[tuple[str, Retry]]:
    """Every step, then every compensation, with its retry policy, in declared order."""
    steps = saga.spec.steps
    return [(s.name, s.retry) for s in steps] + [
        (s.compensation.name, s.compensation.retry) for s in steps if s.compensation is not None
    ]


def _tries(retry: Retry, fault: Fault | None) -> tuple[int, bool]:
    """How many attempts a handler makes under ``fault``, and whether the last succeeds."""
    if fault is None:
        return 1, True
    most = retry.max_attempts if issubclass(fault.error, retry.retry_on) else 1
    if fault.times is None or fault.times >= most:
        return most, False
    return fault.times + 1, True


def may_fail_in_doubt(step: StepSpec) -> bool:
    """Whether ``step``'s definition says its handler may act and then fail: it
    has a compensation, and lists errors in doubt, has a timeout or compensates
    every failure."""
    if step.compensation is None:
        return False
    return bool(step.in_doubt) or step.timeout is not None or step.compensate_failed


def fails_in_doubt(step: StepSpec, error: type[BaseException]) -> bool:
    """Whether ``step`` failing for good with ``error`` is a failure in doubt (its
    own compensation runs first), as the runner decides it."""
    if step.compensation is None:
        return False
    return step.compensate_failed or issubclass(error, _ALWAYS_IN_DOUBT + step.in_doubt)


def path(saga: type[Saga], plan: Mapping[str, Fault]) -> tuple[Attempt, ...]:
    """The attempts a run under ``plan`` makes, in order, if the handlers do
    nothing but what the plan says: the steps up to the first that fails for
    good, then (if it failed in doubt) its own compensation, then the
    compensations of the completed steps, in reverse order."""
    attempts: list[Attempt] = []

    def attempt(name: str, retry: Retry) -> bool:
        fault = plan.get(name)
        n, ok = _tries(retry, fault)
        acted = fault is not None and fault.after_acting
        attempts.extend(
            Attempt(name, i, ok and i == n, acted and not (ok and i == n)) for i in range(1, n + 1)
        )
        return ok

    steps = saga.spec.steps
    for s in steps:
        if not attempt(s.name, s.retry):
            fault = plan[s.name]
            if s.compensation is not None and fails_in_doubt(s, fault.error):
                attempt(s.compensation.name, s.compensation.retry)
            for done in reversed(steps[: s.index]):
                if done.compensation is not None:
                    attempt(done.compensation.name, done.compensation.retry)
            break
    return tuple(attempts)


def crash_points(attempts: Sequence[Attempt]) -> list[Crash]:
    """Every crash point a path reaches, in order."""
    return [Crash(point, a.state, a.number) for a in attempts for point in CRASH_POINTS]


def handler_faults(retry: Retry, errors: Sequence[type[Exception]]) -> list[Fault]:
    """The faults worth injecting into one handler: fail for good, and fail k
    times then succeed for each k its retry policy lets it survive (only with
    the errors its ``retry_on`` matches; one error per kind of behaviour)."""
    return _by_behaviour(retry, errors, after_acting=False)


def in_doubt_faults(step: StepSpec, errors: Sequence[type[Exception]]) -> list[Fault]:
    """The faults after acting worth injecting into a step that may fail in doubt
    (none for another): its handler acts, then the attempt fails in doubt, for
    good or k times before one succeeds, as for ``handler_faults``. They raise
    the first of ``errors`` the step fails in doubt on, else ``InDoubt``."""
    if not may_fail_in_doubt(step):
        return []
    doubtful = [e for e in errors if fails_in_doubt(step, e)]
    return _by_behaviour(step.retry, [*doubtful, InDoubt], after_acting=True)


def _by_behaviour(
    retry: Retry, errors: Sequence[type[Exception]], after_acting: bool
) -> list[Fault]:
    found: dict[tuple[int | None, bool], Fault] = {}
    for error in errors:
        retried = issubclass(error, retry.retry_on) and retry.max_attempts > 1
        for times in [None, *range(1, retry.max_attempts if retried else 1)]:
            found.setdefault((times, retried), Fault(times, error, after_acting))
    return sorted(found.values(), key=lambda f: (f.times is not None, f.times or 0))


def failure_plans(
    saga: type[Saga], errors: Sequence[type[Exception]], max_faults: int = 1
) -> Iterator[tuple[int, dict[str, Fault]]]:
    """Every failure plan of up to ``max_faults`` faults, as ``(faults, plan)``:
    no fault first, then by number of faults, each handler in the order it
    runs, the plans with a fault after acting after the others. Plans whose
    faults are not all reached, or that take the same path as a plan listed
    before, are left out."""
    spec = saga.spec
    order = handlers(saga)
    compensated = {s.compensation.name: s for s in spec.steps if s.compensation}
    options = {name: handler_faults(retry, errors) for name, retry in order}
    for s in spec.steps:
        options[s.name] += in_doubt_faults(s, errors)
    seen: set[tuple[Attempt, ...]] = set()

    def fresh(plan: dict[str, Fault]) -> bool:
        walked = path(saga, plan)
        reached = {a.state for a in walked}
        if not set(plan) <= reached or walked in seen:
            return False
        seen.add(walked)
        return True

    if fresh({}):
        yield 0, {}
    for size in range(1, max_faults + 1):
        plans = [
            full
            for combo in itertools.combinations([name for name, _ in order], size)
            for faults in itertools.product(*(options[h] for h in combo))
            for full in _with_trigger(
                saga, dict(zip(combo, faults, strict=True)), compensated, errors
            )
        ]
        plans.sort(key=lambda plan: any(f.after_acting for f in plan.values()))  # stable
        for plan in plans:
            if fresh(plan):
                yield size, plan


def _with_trigger(
    saga: type[Saga],
    plan: dict[str, Fault],
    compensated: Mapping[str, StepSpec],
    errors: Sequence[type[Exception]],
) -> Iterator[dict[str, Fault]]:
    """``plan``, or, if it faults a compensation and no step fails for good in
    it, ``plan`` with each step failure that makes that compensation run: a
    later step failing for good, or the compensation's own step failing in
    doubt for good."""
    spec = saga.spec
    comps = [compensated[h].index for h in plan if h in compensated]
    fails = [h for h in plan if h not in compensated and not _tries(spec.step(h).retry, plan[h])[1]]
    if not comps or fails:
        yield plan
        return
    for s in spec.steps[max(comps) + 1 :]:
        if s.name not in plan:
            yield {s.name: Fault(None, errors[0]), **plan}
    own = spec.steps[max(comps)]
    if own.name not in plan:
        for fault in in_doubt_faults(own, errors):
            if fault.times is None:
                yield {own.name: fault, **plan}
