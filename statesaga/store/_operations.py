"""An operator's requests on sagas, and the transitions operators write.

A request (``cancel``, ``pause``) is written on the saga row with who asked
and why, and the saga is made due: the runner that holds it, or the next one
to claim it, carries it out as a fenced transition of its own (the lease
heartbeat tells a holder within a beat). A paused saga's row says
``paused``; claims skip it. Operator transitions out of a state no runner
holds (``unpaused``, ``resolved``, ``retried``) are written here, fenced on the
saga's sequence number and status, so a concurrent change makes them fail.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from statesaga.store._base import StoreBase
from statesaga.store._claims import CHANNEL
from statesaga.store._rows import LogRecord, SagaChanges
from statesaga.store.schema import log, sagas


class Operations(StoreBase):
    """Operator requests and operator transitions."""

    def request(
        self,
        saga_id: str,
        request: str | None,
        by: str | None,
        reason: str | None,
        now: float,
        *,
        statuses: Iterable[str],
        replacing: Iterable[str | None],
    ) -> bool:
        """Ask the runner of ``saga_id`` to carry out ``request``, and make the saga
        due (``request`` ``None``: only make it due now); only while its status is
        one of ``statuses`` and its current request one of ``replacing``. Returns
        whether it was done."""
        current = list(replacing)
        allowed = [r for r in current if r is not None]
        which = sa.or_(
            sagas.c.request.in_(allowed) if allowed else sa.false(),
            sagas.c.request.is_(None) if None in current else sa.false(),
        )
        ask = (
            sagas.update()
            .where(sagas.c.saga_id == saga_id, sagas.c.status.in_(list(statuses)), which)
            .values(request=request, request_by=by, request_reason=reason, due_at=now)
        )
        with self._writing() as conn:
            done = conn.execute(ask).rowcount == 1
            if done and self.dialect == "postgresql":
                conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            return done

    def settle_request(self, saga_id: str, done: str, then: str | None = None) -> None:
        """The runner carried out request ``done``: clear it (or leave ``then``)."""
        with self._writing() as conn:
            conn.execute(
                sagas.update()
                .where(sagas.c.saga_id == saga_id, sagas.c.request == done)
                .values(request=then, **({} if then else {"request_by": None}))
            )

    def operate(
        self,
        saga_id: str,
        seq: int,
        status: str,
        changes: SagaChanges,
        entry: LogRecord,
        *,
        request: str | None = None,
    ) -> bool:
        """Write an operator's transition on a saga no runner holds: the row as
        ``changes`` says (and its request set to ``request``), one log entry; only
        if the row is still at ``seq`` with ``status``. Returns whether it was."""
        write = (
            sagas.update()
            .where(
                sagas.c.saga_id == saga_id,
                sagas.c.seq == seq,
                sagas.c.status == status,
                sagas.c.owner.is_(None) | (sagas.c.lease_until < changes["updated_at"]),
            )
            .values(**changes, request=request, request_by=None, request_reason=None)
        )
        with self._writing() as conn:
            if conn.execute(write).rowcount != 1:
                return False
            conn.execute(log.insert(), [dict(entry)])
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            return True
