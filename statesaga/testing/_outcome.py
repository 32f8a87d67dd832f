"""What a harness run produced: every handler call it saw, and the run's outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs

from statesaga._status import SagaStatus
from statesaga._views import LogEntry
from statesaga.testing._scenario import Crash, Scenario


@attrs.frozen
class Call:
    """One handler invocation the harness saw (including those it made fail).

    Attributes:
        state: the step or compensation.
        attempt: its attempt number.
        args: what the handler got after ``self``: ``(ctx,)`` or ``(ctx, result)``.
        injected: whether the harness made it fail (before its handler ran, or
            after, for a fault ``after_acting``).
        error: what the handler itself raised (``Type: message``), if it did.
    """

    state: str
    attempt: int
    args: tuple[Any, ...]
    injected: bool
    error: str | None = None

    @property
    def ran(self) -> bool:
        """Whether the handler ran to its end (not injected, raised nothing)."""
        return not self.injected and self.error is None


@attrs.frozen
class Outcome:
    """What a harness run produced.

    Attributes:
        saga_id: the saga's id.
        scenario: what the harness did to it.
        status: its final status.
        results: its step results, as stored.
        history: its log, oldest first.
        crashed: whether a simulated crash happened (and the saga was resumed).
        calls: every handler invocation, in order.
        returns: what each step's handler last returned, by step name.
        duplicates_created: for each duplicate start, whether it created a saga
            (it never should).
        effects: what the run did to the outside world, as counted by the
            harness's ``effects`` function (empty without one).
        reached: every crash point the run reached, in order, each as the
            ``Crash`` that would happen there (the crashes that did included).
        crashes: the crashes that happened.
        crashed_after: for each crash, how many log entries were committed before it.
        state_before: the harness's ``state()`` before the run (``None`` without one).
        state_after: the harness's ``state()`` after the run.
    """

    saga_id: str
    scenario: Scenario
    status: SagaStatus
    results: Mapping[str, Any]
    history: list[LogEntry]
    crashed: bool
    calls: list[Call]
    returns: Mapping[str, Any]
    duplicates_created: list[bool]
    effects: Counter[str]
    reached: tuple[Crash, ...] = ()
    crashes: tuple[Crash, ...] = ()
    crashed_after: tuple[int, ...] = ()
    state_before: Any = None
    state_after: Any = None

    def ran(self) -> Counter[str]:
        """How many times each handler ran to its end."""
        return Counter(c.state for c in self.calls if c.ran)
