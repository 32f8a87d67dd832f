"""Operator actions: cancel, retry, resolve, pause and unpause a saga.

Each is a transition of the saga's machine, fenced and logged like any other,
with who did it and why (``actor``, ``reason``: in the entry's result, or for a
cancel in the saga's error). An action on a saga a runner may be driving
(``cancel``, ``pause``) is a *request* on its row: the runner holding it carries
it out between two attempts — the attempt in flight records its outcome first —
and a saga nobody holds is claimed and carried out here when this engine has its
definition (else by the next worker that claims it). Actions on a saga nobody
drives (``unpause``, ``resolve``, ``retry`` of a ``compensation_failed`` saga)
are written here, fenced on the saga's sequence number.

A cancelled saga compensates its completed steps in reverse and ends ``failed``
(its error says who cancelled it and why) or ``compensation_failed``: ``failed``
keeps its meaning, every effect undone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from statesaga import _codec as codec
from statesaga._errors import OperatorRefused, SagaNotFound
from statesaga._registry import Registry
from statesaga._replay import replay
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import SagaRun
from statesaga.store import LogRow, SagaRow, SqlStore

if TYPE_CHECKING:
    from statesaga._registry import Definition

_RUNNING = ("started",)
_UNFINISHED = ("started", "compensating")


class Operating:
    """The operator API of ``SagaEngine`` (its methods are the engine's)."""

    store: SqlStore
    _registry: Registry
    _clock: Callable[[], float]

    # Provided by SagaEngine.
    get: Callable[[str], SagaRun]
    _resume: Callable[[str, asyncio.AbstractEventLoop | None], SagaRun]

    def cancel(self, saga_id: str, reason: str, *, actor: str | None = None) -> SagaRun:
        """Stop a running, parked, waiting or paused saga going forward: it
        compensates its completed steps in reverse (a step in flight records its
        outcome first) and ends ``failed`` — or ``compensation_failed``.

        Raises:
            SagaNotFound: no saga has that id.
            OperatorRefused: it is not running (ended, or compensating already).
        """
        row = self._row(saga_id)
        if row.status != "started":
            raise OperatorRefused("cancel", saga_id, f"it is {row.status}; only a started saga")
        asked = self.store.request(
            saga_id,
            "cancel",
            actor,
            reason,
            self._clock(),
            statuses=_RUNNING,
            replacing=(None, "pause", "paused"),
        )
        if not asked:
            raise OperatorRefused("cancel", saga_id, "it changed meanwhile; look again")
        return self._drive_here(row)

    def pause(
        self, saga_id: str, *, actor: str | None = None, reason: str | None = None
    ) -> SagaRun:
        """Stop a saga from being driven: no runner takes it until ``unpause``; a
        handler already running finishes its attempt (its outcome is recorded).

        Raises:
            SagaNotFound: no saga has that id.
            OperatorRefused: it has ended, or is paused or being cancelled already.
        """
        row = self._row(saga_id)
        if row.status not in _UNFINISHED or row.request is not None:
            why = row.status if row.request is None else f"{row.request} already"
            raise OperatorRefused("pause", saga_id, f"it is {why}")
        if not self.store.request(
            saga_id, "pause", actor, reason, self._clock(), statuses=_UNFINISHED, replacing=(None,)
        ):
            raise OperatorRefused("pause", saga_id, "it changed meanwhile; look again")
        return self._drive_here(row)

    def unpause(self, saga_id: str, *, actor: str | None = None) -> SagaRun:
        """Let a paused saga be driven again (from where it was paused).

        Raises:
            SagaNotFound: no saga has that id.
            OperatorRefused: it is not paused.
        """
        row = self._row(saga_id)
        if row.request == "pause":  # asked, not carried out yet: take the request back
            self.store.settle_request(saga_id, "pause")
            return self._drive_here(row)
        if row.request != "paused":
            raise OperatorRefused("unpause", saga_id, "it is not paused")
        defn = self._registry.of_row(row)
        step = defn.machine.state(row.state).step
        assert step is not None
        changes, entry = defn.journal.operator(
            saga_id,
            row.seq,
            row.state,
            EntryStatus.UNPAUSED,
            row.state,
            step,
            row.attempt,
            row.error,
            _note(actor, None),
            self._clock(),
        )
        changes["due_at"] = self._clock()
        if not self.store.operate(saga_id, row.seq, row.status, changes, entry):
            raise OperatorRefused("unpause", saga_id, "it changed meanwhile; look again")
        return self._drive_here(row)

    def resolve(self, saga_id: str, reason: str, *, actor: str | None = None) -> SagaRun:
        """Declare a ``compensation_failed`` saga handled by hand: it ends ``resolved``.

        Raises:
            SagaNotFound: no saga has that id.
            OperatorRefused: it did not end ``compensation_failed``.
        """
        row = self._row(saga_id)
        if row.status != SagaStatus.COMPENSATION_FAILED:
            raise OperatorRefused(
                "resolve", saga_id, f"it is {row.status}, not compensation_failed"
            )
        defn = self._registry.of_row(row)
        last = self.store.log(saga_id)[-1]
        changes, entry = defn.journal.operator(
            saga_id,
            row.seq,
            row.state,
            EntryStatus.RESOLVED,
            "resolved",
            last.step,
            0,
            row.error,
            _note(actor, reason),
            self._clock(),
        )
        if not self.store.operate(saga_id, row.seq, row.status, changes, entry):
            raise OperatorRefused("resolve", saga_id, "it changed meanwhile; look again")
        return self.get(saga_id)

    def retry(self, saga_id: str, *, actor: str | None = None) -> SagaRun:
        """Try again now: a ``compensation_failed`` saga runs its compensations
        again, from the one its chain began with, each with its policy (they are
        idempotent: those that succeeded do nothing more), and ends ``failed``
        when all succeed; a saga parked in a retry delay runs now.

        Raises:
            SagaNotFound: no saga has that id.
            OperatorRefused: neither (it is running, waiting for an event,
                paused, completed or failed).
        """
        row = self._row(saga_id)
        now = self._clock()
        if row.status in _UNFINISHED:
            if row.owner is not None and (row.lease_until or 0) > now:
                raise OperatorRefused("retry", saga_id, "it is running now")
            if row.waiting_for is not None or row.request is not None or row.due_at is None:
                why = "waits for an event" if row.waiting_for else "is not parked in a delay"
                raise OperatorRefused("retry", saga_id, f"it {why}")
            if not self.store.request(
                saga_id, None, actor, None, now, statuses=_UNFINISHED, replacing=(None,)
            ):
                raise OperatorRefused("retry", saga_id, "it changed meanwhile; look again")
            return self._drive_here(row)
        if row.status != SagaStatus.COMPENSATION_FAILED:
            raise OperatorRefused("retry", saga_id, f"it is {row.status}: nothing to retry")
        defn = self._registry.of_row(row)
        first = _first_compensation(defn, self.store.log(saga_id))
        step = defn.machine.state(first).step
        assert step is not None
        changes, entry = defn.journal.operator(
            saga_id,
            row.seq,
            row.state,
            EntryStatus.RETRIED,
            first,
            step,
            0,
            row.error,
            _note(actor, None),
            now,
        )
        if not self.store.operate(saga_id, row.seq, row.status, changes, entry):
            raise OperatorRefused("retry", saga_id, "it changed meanwhile; look again")
        return self._drive_here(row)

    def _row(self, saga_id: str) -> SagaRow:
        self.store.require_schema()
        row = self.store.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        return row

    def _drive_here(self, row: SagaRow) -> SagaRun:
        """Carry the action out now when this engine has the saga's definition and
        no other runner holds it (else whoever holds or claims it will)."""
        if self._registry.matching(row) is None:
            return self.get(row.saga_id)
        return self._resume(row.saga_id, None)


def _note(actor: str | None, reason: str | None) -> str:
    return codec.dumps({"actor": actor, "reason": reason})


def _first_compensation(defn: Definition, log: Sequence[LogRow]) -> str:
    """The compensation a saga's chain began with (its log's first compensation)."""
    walked = replay(defn.machine, log)
    for move in walked.moves:
        if defn.machine.state(move.dest).kind == "compensation":
            return move.dest
    raise OperatorRefused("retry", "?", "its log shows no compensation")  # pragma: no cover
