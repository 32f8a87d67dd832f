"""A saga's definition as far as its log tells it, for drawing a stored saga
when its definition is not at hand.

The log names each step it entered, in order, and each step it compensated;
it does not name steps never reached, compensations never run, nor what a
compensation is called. So the definition read off a log has the steps the
saga entered, a compensation (called ``undo_<step>``) for each step it
compensated, and retry policies that allow the attempts it made. The saga's
path is a path of that definition's machine, so it is drawn as the full
definition would draw it; only the parts the saga never touched are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from statesaga._spec import CompensationSpec, Retry, SagaSpec, StepSpec
from statesaga.store import LogRow, SagaRow


def _unknown(*_args: Any) -> None:  # pragma: no cover - never called: only drawn
    """The handler of a step known only from a log."""


def spec_from_log(row: SagaRow, log: Sequence[LogRow]) -> SagaSpec:
    """The definition of the saga ``row`` as far as its ``log`` tells it.

    Returns:
        A spec with the saga's name, version and fingerprint, whose steps are
        those the log entered (or the saga's current state, if it has no log
        yet), in order.
    """
    steps: list[str] = []
    attempts: dict[str, int] = {}
    undo_attempts: dict[str, int] = {}
    for entry in log:
        if entry.status.startswith("compensat"):  # compensating, compensated, compensation_*
            undo_attempts[entry.step] = max(undo_attempts.get(entry.step, 1), entry.attempt)
        else:
            if entry.step not in steps:
                steps.append(entry.step)
            attempts[entry.step] = max(attempts.get(entry.step, 1), entry.attempt)
    if not steps:
        steps.append(row.state)
    taken = set(steps)
    specs = []
    for index, name in enumerate(steps):
        compensation = None
        if name in undo_attempts:
            undo = f"undo_{name}"
            while undo in taken:
                undo += "_"
            taken.add(undo)
            compensation = CompensationSpec(
                undo, name, _unknown, Retry(max_attempts=undo_attempts[name])
            )
        specs.append(
            StepSpec(
                name=name,
                index=index,
                handler=_unknown,
                retry=Retry(max_attempts=attempts.get(name, 1)),
                transactional=False,
                timeout=None,
                result_type=None,
                compensation=compensation,
            )
        )
    return SagaSpec(row.name, row.version, None, tuple(specs), row.fingerprint)
