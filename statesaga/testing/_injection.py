"""Inject a scenario's failures and crashes into a saga's real handlers.

Failures are injected through the engine's ``Hooks``: an injected failure
raises before the handler runs, exactly as a service call that fails would;
one ``after_acting`` runs the handler first (its effect happens, its result
is dropped) and then raises, as a call whose answer was lost would. A
simulated crash raises ``SimulatedCrash`` (a ``BaseException``, so no handler
swallows it) at a crash point; the harness then drops that engine, as a dead
process would, and resumes the saga in a fresh engine over the same database.
The injector also records every call and every crash point reached, which
the harness turns into the run's ``Outcome``.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from statesaga._handlers import Hooks
from statesaga.testing._outcome import Call
from statesaga.testing._scenario import Crash, CrashPointName, Fault


class SimulatedCrash(BaseException):
    """Raised at a crash point to stop the engine as a killed process would."""


class Injector(Hooks):
    """Injects a scenario's faults and crashes through the engine's hooks, and
    records every call and every crash point reached."""

    def __init__(self, plan: Mapping[str, Fault], crashes: Iterable[Crash]) -> None:
        self.plan = plan
        self.pending_crashes = list(crashes)
        # Injected failures the saga log has recorded, per state: a crash
        # before the commit loses the record, so that attempt does not count.
        self.failed: Counter[str] = Counter()
        self.pending: str | None = None
        self.leaving: str | None = None  # whose outcome the next commit records
        self.counts: Counter[tuple[str, str]] = Counter()
        self.reached: list[Crash] = []
        self.crashes: list[Crash] = []
        self.calls: list[Call] = []
        self.returns: dict[str, Any] = {}

    def _reach(self, point: CrashPointName, state: str) -> None:
        self.counts[point, state] += 1
        here = Crash(point, state, self.counts[point, state])
        self.reached.append(here)
        if self.pending_crashes and self.pending_crashes[0].fires_at(point, state, here.occurrence):
            self.pending_crashes.pop(0)
            self.crashes.append(here)
            self.pending = None  # the failure it was about to record is lost
            self.leaving = None
            raise SimulatedCrash(f"simulated crash at {point} of {state}")

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        self._reach("before_handler", state)
        fault = self.plan.get(state)
        if fault is not None and (fault.times is None or self.failed[state] < fault.times):
            self.pending = state
            error = fault.error(
                f"injected failure of {state}{' after it acted' if fault.after_acting else ''} "
                f"(attempt {attempt})"
            )
            if fault.after_acting:
                return self._act_then_fail(state, attempt, fn, args, error)
            self.calls.append(Call(state, attempt, args[1:], injected=True))
            raise error
        index = len(self.calls)
        self.calls.append(Call(state, attempt, args[1:], injected=False))
        try:
            result = fn(*args)
        except Exception as exc:
            self._raised(index, exc)
            raise
        if inspect.isawaitable(result):
            # The runner awaits what the hook returns: hand it a coroutine that
            # records the handler's real result, not the coroutine object.
            return self._settle(index, len(args) == 2, result)
        self._returned(index, len(args) == 2, result)
        return result

    def _act_then_fail(
        self,
        state: str,
        attempt: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        error: Exception,
    ) -> Any:
        """Run the handler (its effect happens), drop its result and raise ``error``,
        as a call whose answer was lost; an async handler's coroutine is awaited first.
        If the handler raises by itself, that is the attempt's failure instead."""
        index = len(self.calls)
        self.calls.append(Call(state, attempt, args[1:], injected=True))
        try:
            result = fn(*args)
        except Exception as exc:
            self._raised(index, exc)
            raise
        if inspect.isawaitable(result):
            return self._settle_then_fail(index, result, error)
        raise error

    async def _settle_then_fail(self, index: int, pending: Awaitable[Any], error: Exception) -> Any:
        try:
            await pending
        except Exception as exc:
            self._raised(index, exc)
            raise
        raise error

    async def _settle(self, index: int, is_step: bool, pending: Awaitable[Any]) -> Any:
        try:
            result = await pending
        except Exception as exc:
            self._raised(index, exc)
            raise
        self._returned(index, is_step, result)
        return result

    def _raised(self, index: int, exc: Exception) -> None:
        self.calls[index] = attrs.evolve(self.calls[index], error=f"{type(exc).__name__}: {exc}")

    def _returned(self, index: int, is_step: bool, result: Any) -> None:
        if is_step:  # compensations get the result too
            self.returns[self.calls[index].state] = result

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "before_commit":
            # ``state`` is the handler's: the commit records its outcome.
            self.leaving = state
            self._reach("before_commit", state)
            return
        # ``state`` is the one entered; the crash point belongs to the one left.
        left, self.leaving = self.leaving, None
        if self.pending is not None:
            self.failed[self.pending] += 1
            self.pending = None
        if left is not None:
            self._reach("after_commit", left)


class Dispatch(Hooks):
    """The hooks of several runs at once (``recover`` resumes them all): each
    saga's calls go to its own injector; sagas without one run untouched."""

    def __init__(self, injectors: Mapping[str, Injector]) -> None:
        self.injectors = injectors

    def call(
        self, saga_id: str, state: str, attempt: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        injector = self.injectors.get(saga_id)
        if injector is None:
            return fn(*args)
        return injector.call(saga_id, state, attempt, fn, args)

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        injector = self.injectors.get(saga_id)
        if injector is not None:
            injector.point(point, saga_id, state, attempt)
