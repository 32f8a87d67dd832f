"""Hypothesis strategies derived from a saga class.

Every strategy reads the saga's definition, so it covers each step and
compensation the saga has, and only those; crash points and occurrences are
drawn only where the plan's run reaches them (a crash is named after the
handler whose outcome it surrounds, as ``Crash`` says). For custom
properties; ``explore`` walks the same space whole, without Hypothesis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import strategies as st

from statesaga._definition import Saga
from statesaga._errors import InDoubt
from statesaga.testing import _space
from statesaga.testing._scenario import CRASH_POINTS, Crash, Fault, InjectedFault, Scenario


def faults(
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_times: int = 3,
    after_acting: bool = False,
) -> st.SearchStrategy[Fault]:
    """One fault: fail 1..``max_times`` attempts then succeed, or fail for good,
    raising one of ``errors``; ``after_acting``: each failing attempt runs the
    handler first (its effect happens), as ``Fault`` says."""
    return st.builds(
        Fault,
        times=st.one_of(st.integers(1, max_times), st.none()),
        error=st.sampled_from(list(errors)),
        after_acting=st.just(after_acting),
    )


def failure_plans(
    saga: type[Saga],
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_times: int = 3,
) -> st.SearchStrategy[dict[str, Fault]]:
    """Faults for any subset of the saga's steps and compensations (the others
    succeed). A step that may fail in doubt (it has a compensation, and lists
    errors in ``in_doubt=``, has a timeout or ``compensate_failed=True``) may
    also act and then fail in doubt: with those of ``errors`` it fails in doubt
    on, or ``InDoubt``."""
    options = {name: faults(errors, max_times) for name, _ in _space.handlers(saga)}
    for s in saga.spec.steps:
        if _space.may_fail_in_doubt(s):
            doubtful = [e for e in errors if _space.fails_in_doubt(s, e)]
            acted = faults([*doubtful, InDoubt], max_times, after_acting=True)
            options[s.name] = st.one_of(options[s.name], acted)
    return st.lists(st.sampled_from(list(options)), unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({name: options[name] for name in chosen})
    )


def crash_points(
    saga: type[Saga], plan: Mapping[str, Fault] | None = None
) -> st.SearchStrategy[Crash]:
    """A crash before a handler, after it before its commit, or after its commit.

    With ``plan``: only where a run under that plan gets, on attempts it makes.
    Without: at any step or compensation, on any attempt its retry policy allows.
    """
    if plan is not None:
        return st.sampled_from(_space.crash_points(_space.path(saga, plan)))
    return st.sampled_from(_space.handlers(saga)).flatmap(
        lambda handler: st.builds(
            Crash,
            point=st.sampled_from(CRASH_POINTS),
            state=st.just(handler[0]),
            occurrence=st.integers(1, handler[1].max_attempts),
        )
    )


def states_visited(saga: type[Saga], plan: Mapping[str, Fault]) -> list[str]:
    """The steps and compensations a run of ``saga`` under ``plan`` goes through:
    the steps up to the first that fails for good, then the compensations of the
    completed steps, in reverse order."""
    visited: list[str] = []
    for attempt in _space.path(saga, plan):
        if attempt.number == 1:
            visited.append(attempt.state)
    return visited


def duplicate_deliveries(max_duplicates: int = 2) -> st.SearchStrategy[int]:
    """How many times the same start request arrives again."""
    return st.integers(0, max_duplicates)


def explored_scenarios(
    saga: type[Saga],
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_faults: int = 1,
    crash: bool | None = None,
) -> st.SearchStrategy[Scenario]:
    """A scenario of ``explore``'s space: a failure plan of up to ``max_faults``
    faults with one crash at a point it reaches, or none.

    The handler the crash lands in is drawn first, so a compensation that only
    a few plans reach is as likely as the first step; it shrinks towards the
    smallest scenario.

    Args:
        crash: ``True`` for crash scenarios only, ``False`` for none of them.
    """
    by_handler: dict[str | None, list[Scenario]] = {}
    for _, plan in _space.failure_plans(saga, errors, max_faults):
        if crash is not True:
            by_handler.setdefault(None, []).append(Scenario(plan))
        if crash is not False:
            for point in _space.crash_points(_space.path(saga, plan)):
                by_handler.setdefault(point.state, []).append(Scenario(plan, point))
    return st.sampled_from(list(by_handler)).flatmap(lambda h: st.sampled_from(by_handler[h]))


def scenarios(
    saga: type[Saga],
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_times: int = 3,
) -> st.SearchStrategy[Scenario]:
    """A scenario of ``explore``'s space, or a failure plan of any size with a
    crash at a point it reaches (or none), and maybe duplicate starts."""

    def with_crash(plan: dict[str, Fault]) -> st.SearchStrategy[Scenario]:
        return st.builds(
            Scenario,
            plan=st.just(plan),
            crash=st.one_of(st.none(), crash_points(saga, plan)),
            duplicates=duplicate_deliveries(),
        )

    return st.one_of(
        explored_scenarios(saga, errors),
        failure_plans(saga, errors, max_times).flatmap(with_crash),
    )
