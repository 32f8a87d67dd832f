"""Hypothesis strategies derived from a saga class.

Every strategy reads the saga's state machine, so it covers each step and
compensation the saga has, and only those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import strategies as st

from statesaga._definition import Saga
from statesaga.testing.harness import CRASH_POINTS, Crash, Fault, InjectedFault, Scenario


def _handlers(saga: type[Saga]) -> list[str]:
    return [s.name for s in saga.machine.states if s.kind != "terminal"]


def faults(
    errors: Sequence[type[Exception]] = (InjectedFault,), max_times: int = 3
) -> st.SearchStrategy[Fault]:
    """One fault: fail 1..``max_times`` attempts then succeed, or fail for good,
    raising one of ``errors``."""
    return st.builds(
        Fault,
        times=st.one_of(st.integers(1, max_times), st.none()),
        error=st.sampled_from(list(errors)),
    )


def failure_plans(
    saga: type[Saga],
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_times: int = 3,
) -> st.SearchStrategy[dict[str, Fault]]:
    """Faults for any subset of the saga's steps and compensations (the others succeed)."""
    names = _handlers(saga)
    return st.dictionaries(st.sampled_from(names), faults(errors, max_times), max_size=len(names))


def crash_points(saga: type[Saga]) -> st.SearchStrategy[Crash]:
    """A crash before a handler, after a handler but before its commit, or after a
    commit, at any step or compensation, the first or second time it gets there."""
    return st.builds(
        Crash,
        point=st.sampled_from(CRASH_POINTS),
        state=st.sampled_from(_handlers(saga)),
        occurrence=st.integers(1, 2),
    )


def states_visited(saga: type[Saga], plan: Mapping[str, Fault]) -> list[str]:
    """The steps and compensations a run of ``saga`` under ``plan`` goes through:
    the steps up to the first that fails for good, then the compensations of the
    completed steps, in reverse order."""
    visited: list[str] = []
    for s in saga.spec.steps:
        visited.append(s.name)
        fault = plan.get(s.name)
        if fault is not None and (fault.times is None or fault.times >= s.retry.max_attempts):
            visited += [
                done.compensation.name
                for done in reversed(saga.spec.steps[: s.index])
                if done.compensation is not None
            ]
            break
    return visited


def duplicate_deliveries(max_duplicates: int = 2) -> st.SearchStrategy[int]:
    """How many times the same start request arrives again."""
    return st.integers(0, max_duplicates)


def scenarios(
    saga: type[Saga],
    errors: Sequence[type[Exception]] = (InjectedFault,),
    max_times: int = 3,
) -> st.SearchStrategy[Scenario]:
    """A failure plan, maybe a crash at a state that plan visits, maybe duplicate starts."""

    def with_crash(plan: dict[str, Fault]) -> st.SearchStrategy[Scenario]:
        crash = st.builds(
            Crash,
            point=st.sampled_from(CRASH_POINTS),
            state=st.sampled_from(states_visited(saga, plan)),
            occurrence=st.integers(1, 2),
        )
        return st.builds(
            Scenario,
            plan=st.just(plan),
            crash=st.one_of(st.none(), crash),
            duplicates=duplicate_deliveries(),
        )

    return failure_plans(saga, errors, max_times).flatmap(with_crash)
