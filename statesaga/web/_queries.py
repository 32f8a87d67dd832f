"""The console's listing: one page of sagas, and how many there are by status.

The store's ``list``/``count`` filter by status and name; the console also
filters by text in the error and wants every status's count at once, so it
reads the ``sagas`` table itself here, in two statements on a read-only
connection: a ``GROUP BY status`` for the counts and the page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import attrs
import sqlalchemy as sa

from statesaga._status import SagaStatus
from statesaga.store import SagaRow, SqlStore
from statesaga.store._connect import READ_ONLY
from statesaga.store.schema import sagas

#: Sagas on one page of the list.
PAGE_SIZE = 50


@attrs.frozen
class Filters:
    """What the list shows: a status, a definition name, text in the error, a page.

    Attributes:
        status: only sagas with this status (``None``: all).
        name: only sagas of this definition (``None``: all).
        error: only sagas whose error contains this, ignoring case (``None``: all).
        offset: sagas skipped (pages before this one).
    """

    status: str | None = None
    name: str | None = None
    error: str | None = None
    offset: int = 0

    @classmethod
    def parse(cls, query: dict[str, str]) -> Filters:
        """Filters from a query string; unknown or empty values are dropped."""
        status = query.get("status") or None
        if status not in {s.value for s in SagaStatus}:
            status = None
        try:
            offset = max(0, int(query.get("offset", "0")))
        except ValueError:
            offset = 0
        return cls(status, query.get("name") or None, query.get("error") or None, offset)

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters, changed, as a query string's items (empty ones left out)."""
        values = attrs.asdict(attrs.evolve(self, **changes))
        return {k: str(v) for k, v in values.items() if v not in (None, "", 0)}


@attrs.frozen
class Page:
    """One page of the list.

    Attributes:
        rows: the sagas on it, newest first.
        counts: how many sagas match the name and error filters, by status.
        total: how many match every filter (what the pages go through).
    """

    rows: list[SagaRow]
    counts: dict[str, int]
    total: int


def _where(filters: Filters, *, with_status: bool) -> list[Any]:
    where: list[Any] = []
    if filters.name is not None:
        where.append(sagas.c.name == filters.name)
    if filters.error is not None:
        # lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
        where.append(sa.func.lower(sagas.c.error).contains(filters.error.lower(), autoescape=True))
    if with_status and filters.status is not None:
        where.append(sagas.c.status == filters.status)
    return where


@contextlib.contextmanager
def _reading(store: SqlStore) -> Iterator[sa.Connection]:
    # Read-only: on SQLite a plain BEGIN, so a reader never queues behind writers.
    with store.engine.connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


def read_page(store: SqlStore, filters: Filters, limit: int = PAGE_SIZE) -> Page:
    """The page of sagas ``filters`` asks for, and the counts by status."""
    store.require_schema()
    counted = (
        sa.select(sagas.c.status, sa.func.count())
        .where(*_where(filters, with_status=False))
        .group_by(sagas.c.status)
    )
    listed = (
        sa.select(sagas)
        .where(*_where(filters, with_status=True))
        .order_by(sagas.c.created_at.desc(), sagas.c.saga_id)
        .limit(limit)
        .offset(filters.offset)
    )
    with _reading(store) as conn:
        counts = {str(status): int(n) for status, n in conn.execute(counted)}
        rows = [SagaRow(*r) for r in conn.execute(listed)]
    total = counts.get(filters.status, 0) if filters.status else sum(counts.values())
    return Page(rows, counts, total)


def names(store: SqlStore) -> list[str]:
    """The definition names of the stored sagas, sorted (for the name filter)."""
    with _reading(store) as conn:
        found = [str(n) for n in conn.execute(sa.select(sagas.c.name).distinct())]
    return sorted(found)
