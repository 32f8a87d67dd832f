"""The run/start/stop life of a relay or a consumer, as a worker has it.

``run()`` blocks until ``stop()`` (or SIGTERM/SIGINT when called from the main
thread; a second signal exits at once); ``start()`` runs the same loop in a
background thread; ``with`` starts and stops it. Each turn does what work
there is; a turn that found none waits for a wake-up or a poll that backs off
from 10 ms to ``poll`` seconds. A turn that fails (the database or the broker
is away) is logged and tried again after a pause.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Self

log = logging.getLogger("statesaga")

_FIRST_POLL = 0.01


class Loop:
    """A loop of turns, until stopped.

    Args:
        poll: the longest idle wait between turns, in seconds.
    """

    #: What the loop is called in logs and thread names.
    kind = "loop"
    #: A turn that finds no work has waited for it already (a consumer's
    #: broker read): go straight to the next.
    turn_waits = False

    def __init__(self, poll: float) -> None:
        if poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        self.poll = poll
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals = 0

    def turn(self) -> int:
        """Do the work there is now; return how much was done (0: none)."""
        raise NotImplementedError

    def wake(self) -> None:
        """Look for work now."""
        self._wake.set()

    def _open(self) -> None:
        """Called once before the first turn of ``run``."""

    def _close(self) -> None:
        """Called once after the last turn of ``run``."""

    def run(self) -> None:
        """Do turns until ``stop`` (or SIGTERM/SIGINT, from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            self._serve()
            return
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._serve()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def start(self) -> Self:
        """Run in a background thread; ``stop`` ends it."""
        self._thread = threading.Thread(
            target=self._serve, name=f"statesaga-{self.kind}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current turn and stop (waits up to ``timeout`` seconds)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("statesaga %s: second signal; exiting now", self.kind)
            os._exit(128 + signum)
        log.info("statesaga %s: signal %s; stopping (send it again to exit now)", self.kind, signum)
        self._stopping.set()
        self._wake.set()

    def _serve(self) -> None:
        idle = _FIRST_POLL
        try:
            self._open()
            while not self._stopping.is_set():
                try:
                    done = self.turn()
                except Exception as exc:
                    log.warning("statesaga %s: %s; trying again", self.kind, exc)
                    self._wake.wait(min(self.poll, 1.0))
                    self._wake.clear()
                    continue
                if done or self.turn_waits:
                    idle = _FIRST_POLL
                    continue
                self._wake.wait(idle)
                self._wake.clear()
                idle = min(idle * 2, self.poll)
        finally:
            self._close()
            self._stopped.set()
