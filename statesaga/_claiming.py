"""Which sagas an engine takes to drive, and taking them.

A saga is taken by claiming it in the store (its lease: this engine's owner
id, an expiry and a new epoch that fences every later write) and rebuilding
its live run from its row and log. A saga that cannot be rebuilt — its
definition is not registered, or its row or log is damaged — is let go at
once, reported with its reason, and not claimed again by this engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from statesaga._errors import ResumeError
from statesaga._handlers import describe
from statesaga._leases import Leases
from statesaga._live import LiveRun
from statesaga._registry import Definition, Registry
from statesaga._runner import Runner
from statesaga.store import SagaRow, SqlStore


class Claims:
    """The claims of one engine (one lease owner) on its store's sagas."""

    def __init__(
        self,
        store: SqlStore,
        registry: Registry,
        leases: Leases,
        runner: Runner,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.registry = registry
        self.leases = leases
        self.runner = runner
        self.clock = clock
        # Sagas this engine found it cannot resume: not claimed again by it.
        self._unresumable: set[str] = set()

    def create(
        self, defn: Definition, saga_id: str, input: Any, input_text: str, *, held: bool
    ) -> LiveRun | SagaRow:
        """Store a new saga — ``held``: claimed by this engine, its first attempt
        started — and return its live run; or the row of the saga that already
        has ``saga_id`` (nothing was written)."""
        now = self.clock()
        lease = (self.leases.owner, self.leases.until()) if held else None
        row, entries = defn.journal.created(saga_id, input_text, now, lease=lease)
        found = self.store.create(row, entries, notify=not held)
        if found is not None:
            return found
        if lease is not None:
            self.leases.hold(saga_id, lease[1])
        return LiveRun(
            defn, saga_id, input, row["state"], row["attempt"], row["seq"], now, row["lease_epoch"]
        )

    def one(self, defn: Definition, saga_id: str) -> LiveRun | None:
        """Claim ``saga_id``, due or not; ``None``: another live runner holds it.

        Raises:
            ResumeError: it cannot be rebuilt; it was let go again.
        """
        taken = self.store.claim(
            self.leases.owner,
            self.leases.until(),
            self.clock(),
            [defn.key],
            saga_id=saga_id,
            due_only=False,
        )
        return self._claimed(defn, taken[0]) if taken else None

    def take(
        self, limit: int, loop: asyncio.AbstractEventLoop | None, parks: bool
    ) -> tuple[list[LiveRun], list[ResumeError]]:
        """Claim up to ``limit`` runnable sagas; return their live runs and the
        claimed ones that cannot be resumed. With ``parks`` only due sagas are
        claimed, their next attempts begin in the claim's transaction (one commit
        for both) and their retry delays park them again; without, a saga waiting
        out a delay is claimed too and waits it out in its thread."""
        runs: list[LiveRun] = []
        skipped: list[ResumeError] = []
        until = self.leases.until()
        with self.store.transaction() as tx:
            rows = self.store.claim(
                self.leases.owner,
                until,
                self.clock(),
                self.registry.keys(),
                limit=limit,
                exclude=self._unresumable,
                due_only=parks,
                connection=tx.connection,
            )
            # A saga never started (seq 0) has no log: no read for it (a new saga's
            # first step starts a round trip sooner).
            logs = self.store.logs([row.saga_id for row in rows if row.seq], tx.connection)
            for row in rows:
                try:
                    defn = self.registry.of_row(row)
                    run = self.runner.claimed(defn, row, logs.get(row.saga_id, []), hold=False)
                except ResumeError as exc:
                    skipped.append(exc)
                    continue
                run.parks = parks
                run.loop = loop
                if parks:
                    self.runner.begin(run, tx)
                runs.append(run)
        # Only now, the claim committed: a heartbeat before would not have found these
        # leases in the database and would have called them lost.
        for run in runs:
            self.leases.hold(run.saga_id, until)
        if skipped:  # let go again, once the claim is committed
            self._unresumable.update(exc.saga_id for exc in skipped)
            self.store.release(self.leases.owner, [exc.saga_id for exc in skipped])
        return runs, skipped

    def _claimed(self, defn: Definition, row: SagaRow) -> LiveRun:
        """The live run of a saga just claimed; an unresumable one is let go again."""
        try:
            return self.runner.claimed(defn, row)
        except ResumeError:
            self._unresumable.add(row.saga_id)
            self.store.release(self.leases.owner, [row.saga_id])
            raise

    def unresumable(self) -> list[ResumeError]:
        """Unfinished sagas of definitions this engine does not have, each with why."""
        skipped = []
        for row in self.store.incomplete(except_=self.registry.keys()):
            try:
                self.registry.of_row(row)
            except ResumeError as exc:
                skipped.append(exc)
        return skipped

    def quarantine(self, saga_id: str, exc: Exception) -> ResumeError:
        """Set a saga aside after driving it failed unexpectedly; say why."""
        self._unresumable.add(saga_id)
        return ResumeError(saga_id, f"driving it failed: {describe(exc)}")

    def next_due(self) -> float | None:
        """When the next parked saga of a registered definition is due."""
        return self.store.next_due(self.registry.keys())

    def let_go(self, saga_ids: Iterable[str], why: str) -> None:
        """Give up the leases on ``saga_ids`` (any runner may take them at once)."""
        ids = set(saga_ids)
        self.leases.lose(ids, why)
        self.store.release(self.leases.owner, ids)
