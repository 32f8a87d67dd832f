"""What can happen to a saga in a test: failures, crashes, duplicate starts.

A crash point is named after the handler whose outcome it surrounds, and
means one thing everywhere (scenarios, strategies, messages):

- ``before_handler`` of ``h``: the saga is recorded in ``h``; its handler has
  not run;
- ``before_commit`` of ``h``: the handler ran (or failed); its outcome is not
  recorded, so ``h`` runs again on resume;
- ``after_commit`` of ``h``: its outcome is recorded; whatever comes next has
  not begun.

These are plain data: the harness carries them out (see ``_injection``), and
the failure space (``_space``), the strategies and the reports read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from statesaga._errors import StateSagaError

CrashPointName = Literal["before_handler", "before_commit", "after_commit"]
CRASH_POINTS: tuple[CrashPointName, ...] = ("before_handler", "before_commit", "after_commit")


class InjectedFault(StateSagaError, RuntimeError):
    """The default error an injected failure raises."""


@attrs.frozen(repr=False)
class Fault:
    """What happens to one step or compensation.

    Attributes:
        times: how many attempts fail before one succeeds; ``None`` fails every attempt.
        error: the exception type raised (give your application's own types so
            that a step's ``retry_on`` applies to them).
        after_acting: the handler runs first — its effect happens, its result is
            dropped — and then the attempt fails with ``error``: a call that acted
            but whose answer was lost. With ``InDoubt`` (or an error the step lists
            in ``in_doubt=``, or any error for ``compensate_failed=True``) a step
            with a compensation fails *in doubt*: its own compensation runs first,
            handed ``NOT_COMPLETED``. Otherwise it is a plain failure, and what the
            handler did stays.
    """

    times: int | None = 1
    error: type[Exception] = InjectedFault
    after_acting: bool = False

    def __repr__(self) -> str:
        # A replayable repr that reads as before for the faults that raise before acting.
        after = ", after_acting=True" if self.after_acting else ""
        return f"Fault(times={self.times!r}, error={self.error.__qualname__}{after})"


@attrs.frozen
class Crash:
    """Where one simulated crash happens.

    Attributes:
        point: ``before_handler`` (the handler of ``state`` has not run),
            ``before_commit`` (it ran; its outcome is not recorded, so it runs
            again on resume) or ``after_commit`` (its outcome is recorded).
        state: the step or compensation whose handler the point surrounds;
            ``None`` for the first handler that reaches ``point``.
        occurrence: crash the n-th time ``point`` is reached for ``state`` in
            the scenario (the n-th attempt, counting attempts after a resume).
    """

    point: CrashPointName
    state: str | None = None
    occurrence: int = 1

    def fires_at(self, point: str, state: str, occurrence: int) -> bool:
        """Whether this crash happens on reaching ``point`` of ``state`` for the
        ``occurrence``-th time."""
        if point != self.point:
            return False
        return self.state is None or (self.state == state and self.occurrence == occurrence)


@attrs.frozen
class Scenario:
    """One thing that can happen to a saga: failures, crashes, duplicate starts.

    Attributes:
        plan: faults by step or compensation name (others succeed).
        crash: at most one simulated crash, after which a fresh engine resumes.
        duplicates: how many times the same start request is delivered again
            (once right after the crash, if there is one, the others at the end).
        second_crash: a crash of the engine that resumed after ``crash``
            (occurrences count over the whole scenario).
    """

    plan: Mapping[str, Fault] = attrs.field(factory=dict)
    crash: Crash | None = None
    duplicates: int = 0
    second_crash: Crash | None = None

    @property
    def crashes(self) -> tuple[Crash, ...]:
        """The scenario's crashes, in the order they happen."""
        return tuple(c for c in (self.crash, self.second_crash) if c is not None)
