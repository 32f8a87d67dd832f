"""Where a harness's runs happen: virtual time, and one event loop for async sagas.

Retry delays advance the virtual clock instead of sleeping, so runs are fast
and their logs the same every time. Async sagas run on one event loop for all
of a harness's runs, as in an application server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from statesaga._views import SagaRun

#: The virtual clock's start (any fixed instant: logs read the same on every run).
_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class VirtualClock:
    """Virtual time: ``sleep`` moves it on at once."""

    def __init__(self) -> None:
        self.now = _EPOCH

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class EventLoop:
    """The one event loop a harness runs async sagas on: its own, or the
    caller's (running in another thread) for ``aexplore``."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop
        self._runner: asyncio.Runner | None = None

    def run(self, make: Callable[[], Coroutine[Any, Any, SagaRun]]) -> SagaRun:
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(make(), self._loop).result()
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(make())

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
