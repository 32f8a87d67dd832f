"""What the stores of the choreography's tables (outbox and inbox, the embedded
broker's deliveries) share: an engine, the dialect's ``INSERT`` (for ``ON
CONFLICT DO NOTHING``), the schema, a ``LISTEN`` channel and read-only reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from statesaga.store import migrations
from statesaga.store._connect import READ_ONLY
from statesaga.store._listen import Listener


class TableStore:
    """A store of some of statesaga's tables, on ``engine``.

    Attributes:
        channel: the PostgreSQL channel its writers announce commits on.
    """

    channel: str

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def _insert(self, table: sa.Table) -> Any:
        """This dialect's ``INSERT`` into ``table`` (it can skip conflicting rows)."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def ensure_schema(self) -> None:
        """Create or upgrade statesaga's schema (these tables among it)."""
        migrations.upgrade(self.engine)

    def listen(self, wake: Callable[[], None]) -> Listener | None:
        """Call ``wake()`` whenever a transaction that wrote these tables commits
        (PostgreSQL's ``LISTEN``); ``None`` where that cannot be (SQLite: poll)."""
        if self.dialect != "postgresql":
            return None
        return Listener(self.engine, self.channel, wake)

    def _reading(self) -> Any:
        return self.engine.connect().execution_options(**{READ_ONLY: True})
