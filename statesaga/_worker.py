"""Workers: claim runnable sagas, drive them on a bounded pool, park their timers.

A worker is a claim loop over the store. Each turn it claims at most as many
runnable sagas as it has free slots (unfinished, of a definition it knows,
lease free or expired, due) and hands each to a thread of its pool, which
drives it until it ends or reaches a retry delay; a delay *parks* the saga in
the database (its due time on the row, its lease let go), so a waiting saga
holds no thread, connection or lease, and whichever worker is free when it is
due takes it. Recovering a dead process's sagas is the same loop: their leases
expire and they are simply runnable again.

Between turns the worker waits for the first of: a saga started in this
process, a slot coming free, PostgreSQL's ``NOTIFY`` of a saga started
elsewhere, the next parked saga's due time, or a poll that backs off from
10 ms to ``poll`` seconds (how another process's start is seen on SQLite).

Async handlers run on one long-lived event loop (the application's, when the
worker serves from inside it); sync handlers on the pool's threads.

A worker made with a relay (``engine.worker(relay=broker)``) also publishes the
choreography's outbox: the relay claims events with the worker's lease length
and clock, runs on a thread of its own while the worker serves (woken by
PostgreSQL's ``NOTIFY statesaga_outbox``), is stopped with it, and is drained
after the sagas by ``drain``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, cast

import attrs

from statesaga._errors import ResumeError
from statesaga._views import SagaRun

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine
    from statesaga._leases import Leases
    from statesaga._live import LiveRun
    from statesaga.choreography import Broker, Relay
    from statesaga.store import SqlStore

log = logging.getLogger("statesaga")

#: The shortest and (by default) longest idle poll, in seconds.
_FIRST_POLL = 0.01


class Crew:
    """The workers running on one engine: woken when it starts a saga, stopped
    when it closes."""

    def __init__(self) -> None:
        self._workers: set[Worker] = set()
        self._lock = threading.Lock()

    def join(self, worker: Worker) -> None:
        with self._lock:
            self._workers.add(worker)

    def leave(self, worker: Worker) -> None:
        with self._lock:
            self._workers.discard(worker)

    def wake(self) -> None:
        """Each worker looks for runnable sagas now."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.wake()

    def stop(self) -> None:
        """Stop each worker at once (no grace)."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.stop(grace=0)


@attrs.frozen
class RecoveryReport:
    """What ``recover`` (or a worker's ``drain``) did.

    Attributes:
        resumed: the sagas it drove, where they stopped: a terminal state, or
            parked until a retry delay is over.
        skipped: the sagas it could not resume, each with its reason; they were
            left untouched. Sagas another live runner drives are not listed.
    """

    resumed: list[SagaRun]
    skipped: list[ResumeError]


class Worker:
    """Claims and drives runnable sagas of one engine's registered definitions.

    Make one with ``engine.worker(...)``; then ``run()`` it (blocking; SIGTERM
    or SIGINT stop it gracefully, a second signal exits at once), ``start()`` it
    in a background thread, use it as a context manager (``with`` or ``async
    with``), or ``drain()`` what is runnable now.

    Args:
        engine: the engine whose definitions, store and leases it uses.
        concurrency: sagas driven at once (the pool's threads); a worker never
            claims more than it has free.
        poll: the longest idle wait between claims, in seconds.
        grace: seconds ``stop`` lets running handlers finish before it lets
            their sagas go.
        relay: a relay that publishes the outbox while the worker runs (see
            ``engine.worker``), or ``None``.

    Attributes:
        relay: the worker's relay, if it has one.
    """

    def __init__(
        self,
        engine: SagaEngine,
        concurrency: int = 8,
        *,
        poll: float = 1.0,
        grace: float = 30.0,
        relay: Relay | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self.engine = engine
        self.concurrency = concurrency
        engine.store.reserve(concurrency)  # a commit per running saga, at once
        self.poll = poll
        self.grace = grace
        self.relay = relay
        self._pool = concurrent.futures.ThreadPoolExecutor(
            concurrency, thread_name_prefix="statesaga-worker"
        )
        self._busy: dict[str, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where async handlers run
        self._resumed: list[SagaRun] = []
        # Only a drain reports what it did: a long-running worker keeps nothing
        # of the sagas it drove (its memory stays flat however many it runs).
        self._reports = False
        self._skipped: list[ResumeError] = []
        self._signals = 0
        self._serving = False
        self._parks = True  # retry delays park the saga (a drain that waits sleeps instead)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else f"{len(self._busy)} busy"
        return f"<Worker of {self.engine.owner}: concurrency {self.concurrency}, {state}>"

    def wake(self) -> None:
        """Look for runnable sagas now (a saga was started in this process)."""
        self._wake.set()

    # -- ways to run it -----------------------------------------------------

    def run(self) -> None:
        """Claim and drive sagas until ``stop`` (or SIGTERM/SIGINT, when called
        from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            previous = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
            }
            try:
                self._serve(drain=False)
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            return
        self._serve(drain=False)

    def start(self) -> Worker:
        """Run in a background thread; ``stop`` ends it."""
        self._serving = True  # before the thread runs: a stop() right away waits for it
        self._thread = threading.Thread(
            target=self._serve, args=(False,), name="statesaga-claim", daemon=True
        )
        self._thread.start()
        return self

    def drain(self, wait: bool = True) -> RecoveryReport:
        """Drive every saga runnable now to its end, then return what was done.

        Args:
            wait: wait out retry delays in the pool's threads (each saga holds its
                thread while it waits; the others go on); ``False``: park them
                for a worker instead.
        """
        self._parks = not wait
        self._reports = True
        self._skipped.extend(self.engine._claims.unresumable())
        self._serve(drain=True)
        return RecoveryReport(resumed=list(self._resumed), skipped=list(self._skipped))

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming and starting new attempts; let running handlers finish and
        record their outcome for up to ``grace`` seconds (default: the worker's),
        then let go of every saga (any worker may take them at once; a late write
        of a handler still running is refused)."""
        if grace is not None:
            self.grace = grace
        self._stopping.set()
        self._wake.set()
        if self._serving and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout=self.grace + 30)

    def _wind_down(self) -> None:
        """The serving loop's last act: let running handlers finish and record their
        outcome (up to the grace period), then let go of whatever still runs."""
        deadline = time.monotonic() + self.grace
        with self._lock:
            pending = list(self._busy.values())
        concurrent.futures.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = set(self._busy)
        if left:
            self.engine._claims.let_go(left, "the worker stopped before they finished")
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Worker:
        # Async handlers run on the application's loop, as tasks among its own.
        self._loop = asyncio.get_running_loop()
        return self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def serve(self) -> None:
        """Run as an asyncio task until it is cancelled (then stop gracefully)."""
        async with self:
            await asyncio.Event().wait()  # until cancelled

    # -- the loop -----------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("statesaga: second signal; exiting now (leases will expire)")
            os._exit(128 + signum)
        log.info("statesaga: signal %s; stopping (send it again to exit now)", signum)
        threading.Thread(target=self.stop, name="statesaga-stop", daemon=True).start()

    def _serve(self, drain: bool) -> None:
        self._serving = True
        engine = self.engine
        engine._crew.join(self)
        listener = None if drain else engine.store.listen(self._wake.set)
        if self.relay is not None and not drain:
            self.relay.start()
        idle = _FIRST_POLL
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._busy)
                runs: list[LiveRun] = []
                skipped: list[ResumeError] = []
                if free > 0:
                    try:
                        runs, skipped = engine._claims.take(
                            free, loop=self._loop, parks=self._parks
                        )
                    except Exception as exc:  # the database is away: try again later
                        log.warning("statesaga: claiming sagas failed: %s", exc)
                        self._wake.wait(min(self.poll, 1.0))
                        self._wake.clear()
                        continue
                    self._skipped.extend(skipped)
                    for run in runs:
                        self._submit(run)
                if runs or skipped:  # claimed something: there may be more
                    idle = _FIRST_POLL
                    continue
                if drain and not self._busy:
                    break
                self._wake.wait(self._next_wait(idle) if not drain else None)
                self._wake.clear()
                idle = min(idle * 2, self.poll)
        finally:
            if listener is not None:
                listener.close()
            engine._crew.leave(self)
            if drain:
                self._pool.shutdown(wait=True)
            else:
                self._wind_down()
            self._stop_relay(drain)
            self._serving = False
            self._stopped.set()

    def _stop_relay(self, drain: bool) -> None:
        """Stop the relay, its batch in hand finished; after a drain, publish what
        the sagas drained wrote to the outbox (a failing broker is logged: the
        events stay in the outbox for the next relay)."""
        if self.relay is None:
            return
        if not drain:
            self.relay.stop(self.grace)
            return
        try:
            self.relay.drain()
        except Exception as exc:
            log.warning("statesaga: the worker's relay could not publish the outbox: %s", exc)

    def _next_wait(self, idle: float) -> float:
        """How long to sleep when there was nothing to claim: until the next parked
        saga is due, or the backed-off poll, whichever comes first."""
        try:
            due = self.engine._claims.next_due()
        except Exception:
            due = None
        if due is None:
            return idle
        return max(0.0, min(idle, due - self.engine._clock()))

    def _submit(self, run: LiveRun) -> None:
        run.halt = self._stopping  # a stopping worker starts no new attempt
        with self._lock:
            self._busy[run.saga_id] = self._pool.submit(self._drive, run)

    def _drive(self, run: LiveRun) -> None:
        try:
            done = self.engine._runner.drive(run)
            if done is not None and self._reports:
                self._resumed.append(done)
        except Exception as exc:
            # One saga's trouble (a store error, a bug) stops that saga only: it is
            # reported, left where it was, and not taken again by this engine.
            log.exception("statesaga: driving saga %s failed; it is left as it was", run.saga_id)
            self._skipped.append(self.engine._claims.quarantine(run.saga_id, exc))
        finally:
            with self._lock:
                self._busy.pop(run.saga_id, None)
            self._wake.set()


class Working:
    """The worker API of ``SagaEngine`` (its methods are the engine's)."""

    store: SqlStore
    _leases: Leases
    _clock: Callable[[], float]

    def _as_engine(self) -> SagaEngine:
        return cast("SagaEngine", self)

    def recover(self, concurrency: int = 1, *, wait: bool = True) -> RecoveryReport:
        """Drive every saga that is runnable now and that no live runner holds —
        those of a process that died, and those started but never run — to its end.

        Safe beside live workers and other ``recover`` calls, in any process: a
        saga someone else holds is left to them, silently. A saga that cannot be
        resumed is reported with its reason and left untouched; the others go on.

        Args:
            concurrency: sagas driven at once.
            wait: wait out retry delays (a waiting saga holds one of the
                ``concurrency`` threads; the others go on); ``False``: leave such
                a saga parked at its delay, for a worker.
        """
        self.store.ensure_schema()
        return Worker(self._as_engine(), concurrency).drain(wait)

    def worker(
        self,
        concurrency: int = 8,
        *,
        poll: float = 1.0,
        grace: float = 30.0,
        relay: Broker | None = None,
    ) -> Worker:
        """A worker that claims and drives this engine's sagas (see ``Worker``):
        ``run()`` it, ``start()`` it in a thread, or enter it (``with``/``async with``).

        Args:
            concurrency: sagas driven at once; it never claims more.
            poll: the longest idle wait between claims, in seconds.
            grace: seconds a stop lets running handlers finish.
            relay: a broker (``SqlBroker(engine)``, ``RabbitMQ(url)``): the worker
                then also relays the choreography's outbox from this engine's
                database to it, claiming events with the engine's lease length.
        """
        self.store.ensure_schema()
        runs_relay = None
        if relay is not None:
            from statesaga.choreography import Relay

            runs_relay = Relay(
                self._as_engine(), relay, lease=self._leases.length, clock=self._clock
            )
        return Worker(self._as_engine(), concurrency, poll=poll, grace=grace, relay=runs_relay)
