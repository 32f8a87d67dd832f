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
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import attrs

from statesaga._definition import Saga
from statesaga._spec import Retry
from statesaga.testing._scenario import CRASH_POINTS, Crash, Fault


@attrs.frozen
class Attempt:
    """One attempt of a handler on a plan's predicted path.

    Attributes:
        state: the step or compensation.
        number: its attempt number.
        ok: whether this attempt succeeds.
    """

    state: str
    number: int
    ok: bool


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


def path(saga: type[Saga], plan: Mapping[str, Fault]) -> tuple[Attempt, ...]:
    """The attempts a run under ``plan`` makes, in order, if the handlers do
    nothing but what the plan says: the steps up to the first that fails for
    good, then the compensations of the completed steps, in reverse order."""
    attempts: list[Attempt] = []

    def attempt(name: str, retry: Retry) -> bool:
        n, ok = _tries(retry, plan.get(name))
        attempts.extend(Attempt(name, i, ok and i == n) for i in range(1, n + 1))
        return ok

    steps = saga.spec.steps
    for s in steps:
        if not attempt(s.name, s.retry):
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
    found: dict[tuple[int | None, bool], Fault] = {}
    for error in errors:
        retried = issubclass(error, retry.retry_on) and retry.max_attempts > 1
        for times in [None, *range(1, retry.max_attempts if retried else 1)]:
            found.setdefault((times, retried), Fault(times, error))
    # Extension point: an in-doubt fault (the handler acts, then its call
    # fails) belongs here once the engine compensates such a step (issue #10).
    return sorted(found.values(), key=lambda f: (f.times is not None, f.times or 0))


def failure_plans(
    saga: type[Saga], errors: Sequence[type[Exception]], max_faults: int = 1
) -> Iterator[tuple[int, dict[str, Fault]]]:
    """Every failure plan of up to ``max_faults`` faults, as ``(faults, plan)``:
    no fault first, then by number of faults, each handler in the order it
    runs. Plans whose faults are not all reached, or that take the same path
    as a plan listed before, are left out."""
    spec = saga.spec
    order = handlers(saga)
    steps = {s.name for s in spec.steps}
    compensated = {s.compensation.name: s.index for s in spec.steps if s.compensation}
    options = {name: handler_faults(retry, errors) for name, retry in order}
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
        for combo in itertools.combinations([name for name, _ in order], size):
            for faults in itertools.product(*(options[h] for h in combo)):
                plan = dict(zip(combo, faults, strict=True))
                for full in _with_trigger(saga, plan, steps, compensated, errors):
                    if fresh(full):
                        yield size, full


def _with_trigger(
    saga: type[Saga],
    plan: dict[str, Fault],
    steps: set[str],
    compensated: dict[str, int],
    errors: Sequence[type[Exception]],
) -> Iterator[dict[str, Fault]]:
    """``plan``, or, if it faults a compensation and no step fails for good in
    it, ``plan`` with each step failure that makes that compensation run."""
    comps = [compensated[h] for h in plan if h in compensated]
    fails = [h for h in plan if h in steps and not _tries(saga.spec.step(h).retry, plan[h])[1]]
    if not comps or fails:
        yield plan
        return
    for s in saga.spec.steps[max(comps) + 1 :]:
        if s.name not in plan:
            yield {s.name: Fault(None, errors[0]), **plan}
