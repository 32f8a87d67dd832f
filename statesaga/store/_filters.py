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
    # SQL literals, in the statement itself: with bound parameters SQLite (and a
    # generic PostgreSQL plan) cannot tell that a query matches the partial index's
    # ``WHERE status IN ('started', 'compensating')`` and scans the table. (Not
    # ``literal_execute``: that re-renders the SQL at every execution.)
    return sagas.c.status.in_([sa.literal_column(f"'{status}'") for status in INCOMPLETE])


def of_definitions(keys: Sequence[DefinitionKey]) -> Any:
    """Sagas of one of the definitions ``keys``."""
    # One bound parameter per value (not one expanding parameter, which SQLAlchemy
    # re-renders at every execution): a claim's statement is built once and kept.
    rows = [sa.tuple_(*(sa.literal(value) for value in key)) for key in keys]
    return sa.tuple_(sagas.c.name, sagas.c.version, sagas.c.fingerprint).in_(rows)
