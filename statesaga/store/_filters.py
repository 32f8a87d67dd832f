"""The conditions on saga rows that the reads and the claims share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from statesaga.store.schema import INCOMPLETE, sagas

#: A definition a runner can drive: (name, version, fingerprint).
DefinitionKey = tuple[str, int, str]


def incomplete() -> Any:
    """Sagas still ``started`` or ``compensating``, in a form the partial index serves."""
    # Rendered as SQL literals: with bound parameters SQLite (and a generic
    # PostgreSQL plan) cannot tell that a query matches the partial index's
    # ``WHERE status IN ('started', 'compensating')`` and scans the table.
    statuses: Any = sa.bindparam("statuses", list(INCOMPLETE), expanding=True, literal_execute=True)
    return sagas.c.status.in_(statuses)


def of_definitions(keys: Sequence[DefinitionKey]) -> Any:
    """Sagas of one of the definitions ``keys``."""
    return sa.tuple_(sagas.c.name, sagas.c.version, sagas.c.fingerprint).in_(keys)
