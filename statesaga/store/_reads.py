"""The store's reads: saga rows and logs, for runners, recovery and the command line.

Every read runs on a read-only connection (SQLite: a plain ``BEGIN``, so
readers never queue behind the writers' ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from statesaga.store._base import StoreBase
from statesaga.store._filters import DefinitionKey, incomplete, of_definitions
from statesaga.store._rows import LogRow, SagaRow
from statesaga.store.schema import log, sagas


class Reads(StoreBase):
    """Reads sagas and their logs."""

    def get(self, saga_id: str) -> SagaRow | None:
        """The saga row, or ``None``."""
        with self._reading() as conn:
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
        return None if r is None else SagaRow(*r)

    def saga(self, saga_id: str) -> tuple[SagaRow | None, list[LogRow]]:
        """The saga row and its log, read in one snapshot (a runner moving the saga
        meanwhile cannot make them disagree)."""
        with self._reading() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            r = conn.execute(sa.select(sagas).where(sagas.c.saga_id == saga_id)).first()
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return (None if r is None else SagaRow(*r)), [LogRow(*x) for x in rows]

    def log(self, saga_id: str) -> list[LogRow]:
        """The saga's log, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(log).where(log.c.saga_id == saga_id).order_by(log.c.seq)
            ).all()
        return [LogRow(*r) for r in rows]

    def incomplete(
        self, limit: int | None = None, *, except_: Iterable[DefinitionKey] = ()
    ) -> list[SagaRow]:
        """Sagas still ``started`` or ``compensating``, found through the partial
        index, oldest first; ``except_``: leave out those of these definitions."""
        q = sa.select(sagas).where(incomplete()).order_by(sagas.c.created_at)
        keys = list(except_)
        if keys:
            q = q.where(sa.not_(of_definitions(keys)))
        if limit is not None:
            q = q.limit(limit)
        with self._reading() as conn:
            return [SagaRow(*r) for r in conn.execute(q)]

    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: float | None = None,
        before: float | None = None,
        error: str | None = None,
    ) -> list[SagaRow]:
        """Sagas, newest first, filtered (see ``_where``)."""
        q = (
            sa.select(sagas)
            .where(*_where(status, name, after, before, error))
            .order_by(sagas.c.created_at.desc(), sagas.c.saga_id)
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as conn:
            return [SagaRow(*r) for r in conn.execute(q)]

    # -- for the command line: paging and id prefixes ------------------------

    def count(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        after: float | None = None,
        before: float | None = None,
        error: str | None = None,
    ) -> int:
        """How many sagas ``list`` with the same filters would page through."""
        q = sa.select(sa.func.count()).select_from(sagas)
        q = q.where(*_where(status, name, after, before, error))
        with self._reading() as conn:
            return int(conn.execute(q).scalar_one())

    def ids_starting_with(self, prefix: str, limit: int = 10) -> Sequence[str]:
        """Up to ``limit`` saga ids that start with ``prefix`` (exactly: case
        counts, ``%`` and ``_`` are plain characters), sorted."""
        q = (
            sa.select(sagas.c.saga_id)
            .where(
                sagas.c.saga_id.startswith(prefix, autoescape=True),
                # SQLite's LIKE ignores case; this makes the match exact everywhere.
                sa.func.substr(sagas.c.saga_id, 1, len(prefix)) == prefix,
            )
            .order_by(sagas.c.saga_id)
            .limit(limit)
        )
        with self._reading() as conn:
            return list(conn.execute(q).scalars())


def _where(
    status: str | None,
    name: str | None,
    after: float | None,
    before: float | None,
    error: str | None,
) -> list[Any]:
    """The conditions of a listing: its status, its definition's name, started
    at or after ``after`` and before ``before``, ``error`` in its error text
    (as written: case counts, ``%`` and ``_`` are plain characters)."""
    conditions: list[Any] = []
    if status is not None:
        conditions.append(sagas.c.status == status)
    if name is not None:
        conditions.append(sagas.c.name == name)
    if after is not None:
        conditions.append(sagas.c.created_at >= after)
    if before is not None:
        conditions.append(sagas.c.created_at < before)
    if error is not None:
        conditions.append(sagas.c.error.contains(error, autoescape=True))
    return conditions
