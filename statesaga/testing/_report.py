"""What a failing check says: the scenario in words, what differs, the usual fix,
and the saga's log with the crash marked on it.

A crash is worded after the handler whose outcome it surrounds, the same way
``Crash`` defines it, so a message never speaks of a handler that did not run.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import TYPE_CHECKING, Any

import attrs

from statesaga.testing.invariants import InvariantViolation, format_timeline, outcomes

if TYPE_CHECKING:
    from statesaga.testing._outcome import Outcome
    from statesaga.testing._scenario import Crash, Fault, Scenario


def times(n: int) -> str:
    """``once``, ``twice``, ``3 times``."""
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _attempt(crash: Crash) -> str:
    return f" (attempt {crash.occurrence})" if crash.occurrence > 1 else ""


#: How each crash point reads: short (``{whose}``: "its" or "name's"), and as a sentence.
_WHERE = {
    "before_handler": ("before {whose} handler", "just before {state}'s handler runs"),
    "before_commit": (
        "after {whose} handler, before {the} commit",
        "after {state}'s handler ran, before its outcome was committed",
    ),
    "after_commit": ("after {whose} commit", "right after {state}'s outcome was committed"),
}


def crash_words(crash: Crash, handler: str | None = None) -> str:
    """A crash, short: ``crash after its handler, before its commit`` when it
    surrounds ``handler``, else naming the handler it surrounds."""
    if crash.state is None:
        return f"crash at the first {crash.point}"
    own = crash.state == handler
    where = _WHERE[crash.point][0].format(
        whose="its" if own else f"{crash.state}'s", the="its" if own else "the"
    )
    return f"crash {where}{_attempt(crash)}"


def _crash_sentence(crash: Crash) -> str:
    if crash.state is None:
        return f"the process crashes at the first {crash.point}"
    where = _WHERE[crash.point][1].format(state=crash.state)
    return f"the process crashes {where}{_attempt(crash)}"


def _fault_words(handler: str, fault: Fault) -> str:
    error = fault.error.__name__
    if fault.after_acting:
        if fault.times is None:
            return f"{handler} acts and then fails, every attempt, for good ({error})"
        return f"{handler} acts and then fails {times(fault.times)} ({error}), then succeeds"
    if fault.times is None:
        return f"{handler} fails for good ({error})"
    return f"{handler} fails {times(fault.times)} ({error}), then succeeds"


def scenario_words(scenario: Scenario) -> str:
    """The scenario as a sentence: its faults, its crashes, its duplicate starts."""
    parts = [_fault_words(h, f) for h, f in scenario.plan.items()]
    for crash in scenario.crashes:
        parts.append(f"{_crash_sentence(crash)}, and a fresh engine resumes the saga")
    if scenario.duplicates:
        when = " (while it is stranded, and at the end)" if scenario.crash else ""
        parts.append(f"the start request is delivered {times(scenario.duplicates)} more{when}")
    return "; ".join(parts) or "no fault, no crash"


def change(before: Any, after: Any) -> dict[str, Any]:
    """How a state snapshot changed: for mappings, each key whose value changed,
    as the difference for numbers and ``(before, after)`` otherwise; for other
    snapshots, ``{"state": (before, after)}`` if they differ."""
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
        return {} if before == after else {"state": (before, after)}
    changed: dict[str, Any] = {}
    for key in sorted({*before, *after}, key=repr):
        b, a = before.get(key), after.get(key)
        if _number(b) and _number(a):
            if a != b:
                changed[str(key)] = (a or 0) - (b or 0)
        elif a != b:
            changed[str(key)] = (b, a)
    return changed


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


def change_lines(changed: Mapping[str, Any]) -> list[str]:
    """A state change, one line per key: ``+1`` or ``before → after``."""
    return [
        f"{key}: {value[0]!r} → {value[1]!r}" if isinstance(value, tuple) else f"{key}: {value:+g}"
        for key, value in changed.items()
    ]


def crash_marks(outcome: Outcome) -> dict[int, str]:
    """Timeline marks for the crashes of ``outcome``, after the entries committed before each."""
    marks: dict[int, str] = {}
    for crash, after in zip(outcome.crashes, outcome.crashed_after, strict=False):
        line = f"✗ {crash_words(crash)}; a fresh engine resumes the saga"
        marks[after] = f"{marks[after]}\n      {line}" if after in marks else line
    return marks


@attrs.frozen
class Counterexample:
    """A scenario under which a saga breaks, and how.

    Attributes:
        scenario: what was done to the saga (replay it with ``SagaHarness.run``).
        problem: what went wrong, in one sentence.
        fix: the usual fix for that problem.
        detail: what differs (effects, state), one item per line; may be empty.
        outcome: the run under ``scenario``.
        baseline: the run with the same faults and no crash or duplicates, when
            the problem is a difference from it.
        explored: how many scenarios ``explore`` ran before this one, smallest first.
    """

    scenario: Scenario
    problem: str
    fix: str
    detail: str
    outcome: Outcome
    baseline: Outcome | None = None
    explored: int = 0

    def error(self) -> InvariantViolation:
        """The ``InvariantViolation`` that reports this counterexample."""
        return InvariantViolation(str(self), self)

    @property
    def description(self) -> str:
        """The scenario in words."""
        return scenario_words(self.scenario)

    def __str__(self) -> str:
        out = self.outcome
        lines = [
            self.problem,
            f"  scenario: {self.description}",
            f"  replay:   {self.scenario!r}",
        ]
        lines += [f"  {line}" for line in self.detail.splitlines()]
        lines.append(f"  likely fix: {self.fix}")
        marked = " (✗ marks each crash)" if out.crashes else ""
        lines.append(f"saga ended {out.status.value}; its log{marked}:")
        lines.append(format_timeline(out.history, crash_marks(out)))
        base = self.baseline
        if base is not None and (
            base.status is not out.status or outcomes(base.history) != outcomes(out.history)
        ):
            lines.append(f"without the crash and duplicates it ended {base.status.value}; its log:")
            lines.append(format_timeline(base.history))
        if self.explored:
            lines.append(
                f"(explore ran {self.explored} smaller or earlier scenarios first; all passed)"
            )
        return "\n".join(lines)
