"""Saga invariants, checked against a saga's log.

Each check raises ``InvariantViolation`` with the saga's log drawn as a
timeline, so a failing test shows what the saga actually did.
"""

from __future__ import annotations

from collections.abc import Sequence

from statesaga._errors import StateSagaError
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import LogEntry

_STEP_STATUSES = (
    EntryStatus.EXECUTING,
    EntryStatus.COMPLETED,
    EntryStatus.RETRYING,
    EntryStatus.FAILED,
)
#: Entries that are no step's or compensation's final outcome: starts, and attempts
#: that failed with another to follow.
_NOT_OUTCOMES = (
    EntryStatus.EXECUTING,
    EntryStatus.COMPENSATING,
    EntryStatus.RETRYING,
    EntryStatus.COMPENSATION_RETRYING,
    EntryStatus.INTERRUPTED,
)


class InvariantViolation(StateSagaError, AssertionError):
    """A saga broke one of the saga invariants. The message shows its log."""


def format_timeline(history: Sequence[LogEntry]) -> str:
    """The log as text, one entry per line: ``seq step status #attempt result/error``."""
    lines = []
    for e in history:
        detail = f"  error={e.error}" if e.error else ""
        if e.status is EntryStatus.COMPLETED and e.result is not None:
            detail = f"  result={e.result!r}"
        lines.append(f"  {e.seq:>3} {e.step:<24} {e.status.value:<20} #{e.attempt}{detail}")
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
      the steps before it completed; every completed step that has a
      compensation was compensated exactly once, in reverse order; nothing was
      compensated that never completed, nor any step without a compensation;
    - compensation_failed if and only if some compensation failed for good.

    Raises:
        InvariantViolation: naming the broken invariant, with the log.
    """
    if not status.is_terminal:
        raise fail("the saga did not reach a terminal status", history, status)
    done = outcomes(history)
    order = [s.name for s in spec.steps]
    forward = [(step, st) for step, st in done if st in _STEP_STATUSES]
    backward = [(step, st) for step, st in done if st not in _STEP_STATUSES]
    completed = [step for step, st in forward if st is EntryStatus.COMPLETED]
    if status is SagaStatus.COMPLETED:
        if completed != order or len(forward) != len(order):
            raise fail(
                f"completed, but the steps completed were {completed}, not {order}", history, status
            )
        if backward:
            raise fail("completed, but something was compensated", history, status)
        return
    failed = [step for step, st in forward if st is EntryStatus.FAILED]
    if len(failed) != 1 or forward[-1][1] is not EntryStatus.FAILED:
        raise fail(
            f"ended {status.value}, but the steps that failed for good were {failed}",
            history,
            status,
        )
    if completed != order[: len(completed)] or failed[0] != order[len(completed)]:
        raise fail("the steps did not run in their declared order", history, status)
    expected = [s for s in reversed(completed) if spec.step(s).compensation is not None]
    compensated = [step for step, _ in backward]
    if compensated != expected:
        raise fail(
            f"compensations ran for {compensated}; expected exactly {expected} "
            "(each completed step with a compensation, once, in reverse order)",
            history,
            status,
        )
    comp_failed = any(st is EntryStatus.COMPENSATION_FAILED for _, st in backward)
    if comp_failed != (status is SagaStatus.COMPENSATION_FAILED):
        raise fail(
            f"ended {status.value}, but a compensation failed for good: {comp_failed}",
            history,
            status,
        )
