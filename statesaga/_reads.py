"""Reading sagas back, checked: a damaged row or log is reported, never acted on.

A saga is read with its log in one go; its status and each entry's must be
known ones, and when the definition it ran on is registered its log must be a
path of that definition's machine ending where the row says, and every stored
value must decode. Anything else is ``CorruptSaga``, naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from statesaga import _views as views
from statesaga._errors import CorruptSaga, HistoryMismatch, SagaNotFound
from statesaga._handlers import describe
from statesaga._registry import Registry
from statesaga._spec import SagaSpec
from statesaga._status import EntryStatus, SagaStatus
from statesaga._views import LogEntry, SagaRun, SagaSummary
from statesaga.store import LogRow, SagaRow, SqlStore

_T = TypeVar("_T")
_ENTRY_STATUSES = frozenset(s.value for s in EntryStatus)


class Reads:
    """The engine's reads of its store, decoded with its registered definitions."""

    def __init__(self, store: SqlStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    def get(self, saga_id: str) -> SagaRun:
        """The saga's current state (see ``SagaEngine.get``)."""
        row, log, spec = self._read(saga_id)
        return views.stored_run(row, _decoded(row, log, lambda: views.results(log, spec)))

    def history(self, saga_id: str) -> list[LogEntry]:
        """The saga's log, oldest first (see ``SagaEngine.history``)."""
        row, log, spec = self._read(saga_id)
        return _decoded(row, log, lambda: [views.log_entry(r, spec) for r in log])

    def list(
        self,
        status: SagaStatus | str | None,
        name: str | None,
        limit: int,
        offset: int,
        after: float | None = None,
        before: float | None = None,
        error: str | None = None,
    ) -> list[SagaSummary]:
        """Sagas, newest first (see ``SagaEngine.list``)."""
        self.store.require_schema()
        wanted = None if status is None else SagaStatus(status).value
        rows = self.store.list(
            status=wanted,
            name=name,
            limit=limit,
            offset=offset,
            after=after,
            before=before,
            error=error,
        )
        return [views.summary(r) for r in rows]

    def _read(self, saga_id: str) -> tuple[SagaRow, Sequence[LogRow], SagaSpec | None]:
        """The saga's row and log (read together), checked: its status and each
        entry's are known, and, when the definition it ran on is registered (its
        spec is returned then, to rebuild results as their types), its log is a
        path of that definition's machine that ends where the row says.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: any of that does not hold.
        """
        self.store.require_schema()
        row, log = self.store.saga(saga_id)
        if row is None:
            raise SagaNotFound(saga_id)
        try:
            SagaStatus(row.status)
        except ValueError:
            raise CorruptSaga(saga_id, f"its status {row.status!r} is not a status") from None
        for r in log:
            if r.status not in _ENTRY_STATUSES:
                raise CorruptSaga(saga_id, f"entry {r.seq} has an unknown status {r.status!r}")
        defn = self.registry.matching(row)
        if defn is None:
            return row, log, None
        try:
            defn.journal.check(row, log)
        except HistoryMismatch as exc:
            raise CorruptSaga(saga_id, exc.problem) from None
        return row, log, defn.spec


def _decoded(row: SagaRow, log: Sequence[LogRow], decode: Callable[[], _T]) -> _T:
    """``decode()``, with a stored value that cannot be read reported as corrupt."""
    try:
        return decode()
    except Exception as exc:
        bad = next((r for r in log if not _readable(r.result)), None)
        where = f"entry {bad.seq} ({bad.step} {bad.status})" if bad else "a stored value"
        raise CorruptSaga(row.saga_id, f"{where}: it cannot be read: {describe(exc)}") from exc


def _readable(text: str | None) -> bool:
    if text is None:
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class Reading:
    """The reading API of ``SagaEngine`` (its methods are the engine's)."""

    _reads: Reads

    def get(self, saga_id: str) -> SagaRun:
        """The saga's current state.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: its row or log is damaged (it is left as it is).
        """
        return self._reads.get(saga_id)

    def history(self, saga_id: str) -> list[LogEntry]:
        """The saga's log, oldest first.

        Raises:
            SagaNotFound: no saga has that id.
            CorruptSaga: its row or log is damaged (it is left as it is).
        """
        return self._reads.history(saga_id)

    def list(
        self,
        *,
        status: SagaStatus | str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        started_after: float | None = None,
        started_before: float | None = None,
        error_contains: str | None = None,
    ) -> list[SagaSummary]:
        """Sagas, newest first.

        Args:
            status: only sagas with this status.
            name: only sagas of the definition with this name.
            limit: at most this many.
            offset: skip this many first (for paging).
            started_after: only sagas started at or after this time (UNIX seconds).
            started_before: only sagas started before this time.
            error_contains: only sagas whose error has this text.
        """
        return self._reads.list(
            status,
            name,
            limit,
            offset,
            after=started_after,
            before=started_before,
            error=error_contains,
        )
