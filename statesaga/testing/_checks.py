"""The checks run on every outcome, each worded with the usual fix.

``examine`` runs them in order and returns the first problem as a
``Counterexample``: first what must hold of any one run (the log's
invariants, duplicates, what compensations were handed), then, given the
crash-free run of the same faults, what must be the same (status and log,
effects on the services, change to their state), and last the undo
invariant — after the comparisons, which say more precisely what went wrong
when a crash made a compensation act twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from statesaga._definition import Saga
from statesaga._spec import NOT_COMPLETED
from statesaga._status import EntryStatus, SagaStatus
from statesaga.testing._report import (
    Counterexample,
    change,
    change_lines,
    crash_words,
    scenario_words,
    times,
)
from statesaga.testing.invariants import _FAILED, outcomes, saga_problem

if TYPE_CHECKING:
    from statesaga.testing._outcome import Outcome

#: A check: the problem it finds in an outcome as ``(problem, fix, detail)``, or ``None``.
Found = tuple[str, str, str] | None

_IDEMPOTENT = (
    "pass ctx.idempotency_key to the service so that it drops the repeat (the key is the "
    "same every time {h} runs for this saga), or look the earlier effect up before acting: "
    "a handler runs at least once, and again after a crash before its commit"
)
_NOTHING_TO_UNDO = (
    "a compensation must succeed when there is nothing left to undo: treat 'already "
    "refunded', 'not found' and the like as done"
)
_IN_DOUBT_OPTIONS = (
    "declare it so: @step(in_doubt=({error},)) for the errors that come after it may have "
    "acted (a timeout, a lost connection), raise InDoubt from it, or "
    "@step(compensate_failed=True) if any failure may leave its effect; its compensation "
    "then runs first, handed NOT_COMPLETED, and looks the effect up by ctx.step_key. Or "
    "make it fail before it acts"
)
_LOOK_UP = (
    "{comp} is handed NOT_COMPLETED when {step} failed in doubt (it may have acted, "
    "but returned nothing): then look up what {step} may have done by ctx.step_key (the "
    "idempotency key its attempts used), undo that, and return if nothing is found"
)


def examine(saga: type[Saga], outcome: Outcome, baseline: Outcome | None) -> Counterexample | None:
    """The first problem with ``outcome`` (compared with ``baseline``, the same
    faults without crash or duplicates, if given), or ``None``."""
    checks: list[Callable[[], Found]] = [
        lambda: _log(saga, outcome),
        lambda: _duplicates(outcome),
        lambda: _handed(saga, outcome),
        lambda: _compensation_failed(saga, outcome),
    ]
    if baseline is not None:
        checks += [
            lambda: _same_outcome(saga, outcome, baseline),
            lambda: _same_effects(saga, outcome, baseline),
            lambda: _same_state_change(saga, outcome, baseline),
        ]
    checks.append(lambda: _undone(saga, outcome))
    for check in checks:
        found = check()
        if found is not None:
            problem, fix, detail = found
            return Counterexample(outcome.scenario, problem, fix, detail, outcome, baseline)
    return None


def vacuous(outcome: Outcome) -> Counterexample | None:
    """A problem if no handler of a run without faults ran to its end: then
    nothing was tested (every call raised, e.g. on a missing table)."""
    if any(call.ran for call in outcome.calls):
        return None
    errors = sorted({f"{c.state}: {c.error}" for c in outcome.calls if c.error})
    return Counterexample(
        outcome.scenario,
        "no handler ran to its end in a run without faults: nothing was tested "
        f"(the saga ended {outcome.status.value})",
        "set up what the handlers need first (the application's tables: pass setup=, "
        "or override SagaStateMachine.setup), and give an input the saga accepts",
        "\n".join(f"raised: {e}" for e in errors),
        outcome,
    )


# -- what must hold of every run ------------------------------------------------


def _log(saga: type[Saga], outcome: Outcome) -> Found:
    problem = saga_problem(saga.spec, outcome.status, outcome.history)
    if problem is None:
        return None
    return (
        f"the saga log breaks a saga invariant: {problem}",
        "this is the engine's guarantee, not your saga's: report it with this log",
        "",
    )


def _duplicates(outcome: Outcome) -> Found:
    if not any(outcome.duplicates_created):
        return None
    return (
        "a duplicate start request created a second saga",
        "start sagas with a saga_id of your own (the request's id): a second start "
        "with that id returns the saga that exists",
        "",
    )


def _in_doubt(outcome: Outcome) -> set[str]:
    """The steps that failed for good in doubt (their compensation got ``NOT_COMPLETED``)."""
    return {step for step, st in outcomes(outcome.history) if st is EntryStatus.FAILED_IN_DOUBT}


def _handed(saga: type[Saga], outcome: Outcome) -> Found:
    machine = saga.machine
    in_doubt = _in_doubt(outcome)
    for call in outcome.calls:
        info = machine.state(call.state)
        if info.kind != "compensation" or call.injected:
            continue
        assert info.step is not None
        if info.step in in_doubt:
            if call.args[1] is NOT_COMPLETED:
                continue
            return (
                f"compensation {call.state!r} was handed {call.args[1]!r}, but step "
                f"{info.step!r} failed in doubt and returned nothing (NOT_COMPLETED)",
                "this is the engine's guarantee, not your saga's: report it with this log",
                "",
            )
        expected = outcome.returns.get(info.step)
        if call.args[1] != expected:
            return (
                f"compensation {call.state!r} was handed {call.args[1]!r}, but step "
                f"{info.step!r} returned {expected!r}",
                f"annotate {info.step}'s return type so that its stored result is rebuilt "
                "as that type on resume",
                "",
            )
    return None


def _ran_then_raised(outcome: Outcome, handler: str) -> str | None:
    """The error ``handler`` raised on a run after one that went through, if any."""
    ran = False
    for call in outcome.calls:
        if call.state != handler:
            continue
        if ran and call.error is not None:
            return call.error
        ran = ran or call.ran
    return None


def _compensation_failed(saga: type[Saga], outcome: Outcome) -> Found:
    spec = saga.spec
    for step_name, entry in outcomes(outcome.history):
        if entry is not EntryStatus.COMPENSATION_FAILED:
            continue
        comp = spec.step(step_name).compensation
        assert comp is not None
        fault = outcome.scenario.plan.get(comp.name)
        if fault is not None and (fault.times is None or fault.times >= comp.retry.max_attempts):
            continue  # the scenario made it fail for good
        errors = [e.error for e in outcome.history if e.step == step_name and e.error]
        error = errors[-1] if errors else "no error recorded"
        again = _ran_then_raised(outcome, comp.name)
        if again is not None:
            crash = next((c for c in outcome.crashes if c.state == comp.name), None)
            why = f" ({crash_words(crash, comp.name)})" if crash else ""
            return (
                f"{comp.name} ran twice{why} and raised the second time: {again}",
                f"{_NOTHING_TO_UNDO}",
                "",
            )
        if step_name in _in_doubt(outcome):
            return (
                f"compensation {comp.name!r} failed for good on NOT_COMPLETED ({step_name} "
                f"failed in doubt) although the scenario let it succeed: {error}",
                _LOOK_UP.format(comp=comp.name, step=step_name),
                "",
            )
        result = outcome.returns.get(step_name)
        return (
            f"compensation {comp.name!r} failed for good although the scenario let it "
            f"succeed: {error}",
            f"make {comp.name} work with what {step_name} returned ({result!r}; its type is "
            f"{step_name}'s return annotation), and retry it on transient errors",
            "",
        )
    return None


def _has_state(outcome: Outcome) -> bool:
    return outcome.state_before is not None or outcome.state_after is not None


def _undone(saga: type[Saga], outcome: Outcome) -> Found:
    """The undo invariant: a saga that ends failed leaves the state as it found it."""
    if outcome.status is not SagaStatus.FAILED or not _has_state(outcome):
        return None
    changed = change(outcome.state_before, outcome.state_after)
    if not changed:
        return None
    failing, how = next(
        ((step, st) for step, st in outcomes(outcome.history) if st in _FAILED), (None, None)
    )
    return (
        "the saga ended failed but did not leave the services' state as it found it",
        _undo_fix(saga, outcome, failing, how),
        "\n".join(["state change (should be none):", *(f"  {c}" for c in change_lines(changed))]),
    )


def _undo_fix(
    saga: type[Saga], outcome: Outcome, failing: str | None, how: EntryStatus | None
) -> str:
    """The likely fix for what a failed saga left in force, from how its step failed."""
    generic = (
        "each compensation must undo exactly what its step did: use the result it is "
        "handed (the step's return value), not a value it looks up or rebuilds"
    )
    if failing is None:
        return generic
    step = saga.spec.step(failing)
    if how is EntryStatus.FAILED_IN_DOUBT:
        assert step.compensation is not None  # the saga invariants hold (checked first)
        comp = step.compensation.name
        return (
            f"{failing} failed in doubt, so {comp} ran first, handed NOT_COMPLETED: if what "
            f"stayed is what {failing} did, {comp} must look it up by ctx.step_key (the "
            f"idempotency key {failing}'s attempts used) and undo it. Otherwise {generic}"
        )
    calls = [c for c in outcome.calls if c.state == failing]
    raised = next((c.error for c in calls if c.error), None)  # what the handler raised
    fault = outcome.scenario.plan.get(failing)
    if raised is not None:
        what = f"{failing} raised ({raised}) after it may have acted"
        error = raised.partition(":")[0]
    elif fault is not None and fault.after_acting:
        error = fault.error.__name__
        what = f"{failing} acted and then failed ({error}, injected)"
    else:
        return generic
    if step.compensation is None:
        return (
            f"{what}, and it has no compensation, so what it did stays. Add a compensation "
            f"and {_IN_DOUBT_OPTIONS.format(error=error)}"
        )
    return (
        f"{what}: a definite failure is not compensated, only the steps completed before "
        f"it, so what {failing} did stays. If it may act and then fail, "
        + _IN_DOUBT_OPTIONS.format(error=error)
    )


# -- what must be the same as without the crash ------------------------------------


def _again(outcome: Outcome, baseline: Outcome) -> list[str]:
    """The handlers that ran to their end more often than without the crash."""
    ran, base = outcome.ran(), baseline.ran()
    return [h for h in ran if ran[h] > base[h]]


def _headline(outcome: Outcome, baseline: Outcome, what: str) -> tuple[str, str | None]:
    """``what`` happened, after the handler that ran again and the crash that made it."""
    again = _again(outcome, baseline)
    if not again:
        return f"with {scenario_words(outcome.scenario)}, {what}", None
    crashed = {c.state for c in outcome.crashes}
    handler = next((h for h in again if h in crashed), again[0])
    crash = next((c for c in outcome.crashes if c.state == handler), None)
    why = f" ({crash_words(crash, handler)})" if crash else ""
    return f"{handler} ran {times(outcome.ran()[handler])}{why}, and {what}", handler


def _same_outcome(saga: type[Saga], outcome: Outcome, baseline: Outcome) -> Found:
    if outcome.status is baseline.status and outcomes(outcome.history) == outcomes(
        baseline.history
    ):
        return None
    what = (
        f"the saga ended {outcome.status.value}; without the crash it ended {baseline.status.value}"
    )
    headline, handler = _headline(outcome, baseline, what)
    raised = _ran_then_raised(outcome, handler) if handler else None
    if handler is not None and raised is not None:
        kind = saga.machine.state(handler).kind
        fix = (
            _NOTHING_TO_UNDO
            if kind == "compensation"
            else "a step must give the same result when it runs again: look the earlier "
            "effect up by ctx.idempotency_key instead of failing on it"
        )
        return f"{headline}; the repeat raised {raised}", fix, ""
    raised_after = _raised_after_crash(outcome, baseline)
    if raised_after is not None:
        return (
            f"{headline}; after the crash {raised_after}",
            "after a crash the saga's input and step results are read back from the "
            "database: give the saga an input_type and annotate each step's return type "
            "so that they are rebuilt as those types",
            "",
        )
    return headline, "compare the two logs below: the crash changed what the saga did", ""


def _raised_after_crash(outcome: Outcome, baseline: Outcome) -> str | None:
    """``handler raised error`` for the first handler that raised in ``outcome``
    but never without the crash."""
    raised = {c.state for c in baseline.calls if c.error is not None}
    for call in outcome.calls:
        if call.error is not None and call.state not in raised:
            return f"{call.state} raised {call.error}"
    return None


def _same_effects(saga: type[Saga], outcome: Outcome, baseline: Outcome) -> Found:
    if outcome.effects == baseline.effects:
        return None
    ops = sorted(set(outcome.effects) | set(baseline.effects))
    lines = [
        f"  {op}: {baseline.effects[op]} → {outcome.effects[op]}"
        for op in ops
        if outcome.effects[op] != baseline.effects[op]
    ]
    first = lines[0].strip().replace(":", "", 1)
    headline, handler = _headline(outcome, baseline, f"the services acted again: {first}")
    fix = _IDEMPOTENT.format(h=handler or "a handler")
    if handler is not None and saga.machine.state(handler).kind == "compensation":
        fix = f"make {handler} idempotent: {fix}"
    return headline, fix, "\n".join(["effects (without the crash → with it):", *lines])


def _same_state_change(saga: type[Saga], outcome: Outcome, baseline: Outcome) -> Found:
    if outcome.status is not SagaStatus.COMPLETED or not _has_state(outcome):
        return None
    mine = change(outcome.state_before, outcome.state_after)
    theirs = change(baseline.state_before, baseline.state_after)
    if mine == theirs:
        return None
    headline, handler = _headline(
        outcome, baseline, "the services' state changed otherwise than without the crash"
    )
    detail: list[Any] = ["state change without the crash:"]
    detail += [f"  {c}" for c in change_lines(theirs)] or ["  (none)"]
    detail += ["state change with it:", *(f"  {c}" for c in change_lines(mine))]
    return headline, _IDEMPOTENT.format(h=handler or "a handler"), "\n".join(detail)
