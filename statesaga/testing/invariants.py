"""Saga invariants, checked against a saga's log.

Each check raises ``InvariantViolation`` with the saga's log drawn as a
timeline, so a failing test shows what the saga actually did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from statesaga._errors import StateSagaError
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import LogEntry

if TYPE_CHECKING:
    from statesaga.testing._report import Counterexample

_STEP_STATUSES = (
    EntryStatus.EXECUTING,
    EntryStatus.COMPLETED,
    EntryStatus.RETRYING,
    EntryStatus.FAILED,
    EntryStatus.FAILED_IN_DOUBT,
    EntryStatus.WAITING,
    EntryStatus.TIMED_OUT,
    EntryStatus.CANCELLED,
)
#: A step's final failure: definite (a wait that timed out too), or in doubt (its
#: own compensation runs first).
_FAILED = (
    EntryStatus.FAILED,
    EntryStatus.FAILED_IN_DOUBT,
    EntryStatus.TIMED_OUT,
    EntryStatus.CANCELLED,  # an operator stopped it: compensated as after a failure
)
#: Entries that are no step's or compensation's final outcome: starts, and attempts
#: that failed with another to follow.
_NOT_OUTCOMES = (
    EntryStatus.EXECUTING,
    EntryStatus.COMPENSATING,
    EntryStatus.RETRYING,
    EntryStatus.COMPENSATION_RETRYING,
    EntryStatus.INTERRUPTED,
    EntryStatus.WAITING,
    EntryStatus.PAUSED,
    EntryStatus.UNPAUSED,
    EntryStatus.RESOLVED,
)


class InvariantViolation(StateSagaError, AssertionError):
    """A saga broke one of the saga invariants. The message shows its log.

    Attributes:
        counterexample: what ``explore``, ``assert_saga_correct`` and the
            harness's checks found: the scenario, the problem, both runs;
            ``None`` from ``check_saga``.
    """

    def __init__(self, message: str, counterexample: Counterexample | None = None) -> None:
        super().__init__(message)
        self.counterexample = counterexample


def format_timeline(history: Sequence[LogEntry], marks: Mapping[int, str] | None = None) -> str:
    """The log as text, one entry per line: ``seq step status #attempt result/error``.

    Args:
        history: the log, oldest first.
        marks: lines to insert after the first n entries, by n (a crash, say).
    """
    marks = marks or {}
    lines = [f"      {marks[0]}"] if 0 in marks else []
    for n, e in enumerate(history, 1):
        detail = f"  error={e.error}" if e.error else ""
        if e.status is EntryStatus.COMPLETED and e.result is not None:
            detail = f"  result={e.result!r}"
        lines.append(f"  {e.seq:>3} {e.step:<24} {e.status.value:<20} #{e.attempt}{detail}")
        if n in marks:
            lines.append(f"      {marks[n]}")
    return "\n".join(lines)


def fail(problem: str, history: Sequence[LogEntry], status: SagaStatus) -> InvariantViolation:
    """An ``InvariantViolation`` stating ``problem``, with the saga's log."""
    return InvariantViolation(
        f"{problem}\nsaga ended {status.value}; its log:\n{format_timeline(history)}"
    )


def outcomes(history: Sequence[LogEntry]) -> list[tuple[str, EntryStatus]]:
    """The final outcome of each step and compensation, in log order.

    ``executing``/``compensating`` entries, attempts that were retried and
    attempts cut short by a crash are left out: what remains is what a run
    without retries or crashes would have logged.
    """
    out: list[tuple[str, EntryStatus]] = []
    for i, e in enumerate(history):
        if e.status is EntryStatus.RETRIED:
            # An operator took it back into its compensations: they count again.
            out = [(step, st) for step, st in out if st in _STEP_STATUSES]
            continue
        if e.status in _NOT_OUTCOMES:
            continue
        nxt = history[i + 1] if i + 1 < len(history) else None
        retried = (
            nxt is not None
            and nxt.step == e.step
            and (
                (e.status is EntryStatus.FAILED and nxt.status is EntryStatus.EXECUTING)
                or (
                    e.status is EntryStatus.COMPENSATION_FAILED
                    and nxt.status is EntryStatus.COMPENSATING
                )
            )
        )
        if not retried:
            out.append((e.step, e.status))
    return out


def check_saga(spec: SagaSpec, status: SagaStatus, history: Sequence[LogEntry]) -> None:
    """Check every saga invariant on one finished saga.

    - it reached a terminal status;
    - completed: each step completed exactly once, in order, and nothing was compensated;
    - failed / compensation_failed: exactly one step failed for good, after all
      the steps before it completed; if it failed in doubt, its own compensation
      ran first; every completed step that has a compensation was compensated
      exactly once, in reverse order; nothing else was compensated (no step
      that never completed and did not fail in doubt, no step without a
      compensation);
    - compensation_failed if and only if some compensation failed for good.

    Raises:
        InvariantViolation: naming the broken invariant, with the log.
    """
    problem = saga_problem(spec, status, history)
    if problem is not None:
        raise fail(problem, history, status)


def saga_problem(spec: SagaSpec, status: SagaStatus, history: Sequence[LogEntry]) -> str | None:
    """The first saga invariant ``check_saga`` finds broken, in words; ``None`` if none is."""
    if not status.is_terminal:
        return "the saga did not reach a terminal status"
    done = outcomes(history)
    order = [s.name for s in spec.steps]
    forward = [(step, st) for step, st in done if st in _STEP_STATUSES]
    backward = [(step, st) for step, st in done if st not in _STEP_STATUSES]
    completed = [step for step, st in forward if st is EntryStatus.COMPLETED]
    if status is SagaStatus.COMPLETED:
        if completed != order or len(forward) != len(order):
            return f"completed, but the steps completed were {completed}, not {order}"
        if backward:
            return "completed, but something was compensated"
        return None
    failed = [step for step, st in forward if st in _FAILED]
    if len(failed) != 1 or forward[-1][1] not in _FAILED:
        return f"ended {status.value}, but the steps that failed for good were {failed}"
    if completed != order[: len(completed)] or failed[0] != order[len(completed)]:
        return "the steps did not run in their declared order"
    in_doubt = forward[-1][1] is EntryStatus.FAILED_IN_DOUBT
    if in_doubt and spec.step(failed[0]).compensation is None:
        return f"step {failed[0]!r} failed in doubt, but it has no compensation"
    expected = [failed[0]] if in_doubt else []
    expected += [s for s in reversed(completed) if spec.step(s).compensation is not None]
    compensated = [step for step, _ in backward]
    if compensated != expected:
        return (
            f"compensations ran for {compensated}; expected exactly {expected} "
            "(a step that failed in doubt first, then each completed step with a "
            "compensation, once, in reverse order)"
        )
    comp_failed = any(st is EntryStatus.COMPENSATION_FAILED for _, st in backward)
    ended_failed = status in (SagaStatus.COMPENSATION_FAILED, SagaStatus.RESOLVED)
    if comp_failed != ended_failed:
        return f"ended {status.value}, but a compensation failed for good: {comp_failed}"
    return None
