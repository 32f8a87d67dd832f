"""Creating and upgrading the schema, safely when many processes start at once.

The schema is versioned (``schema.SCHEMA_VERSION``); ``statesaga_schema`` holds
one row per version applied. ``upgrade`` looks at what the database has and:

- nothing of statesaga's: creates every table at the current version;
- an older version: applies each migration after it, in order;
- the current version: does nothing;
- a newer version, an unknown one, or tables without a version row: refuses
  with ``SchemaVersionError`` and changes nothing (re-creating the version row
  would hide a damaged or foreign database).

All of it runs in one transaction holding a lock — PostgreSQL's transaction
advisory lock, SQLite's write lock (``BEGIN IMMEDIATE``) — so two processes
creating or upgrading the schema at once queue instead of racing
(``DuplicateTable``). DDL is transactional on both backends: a failed upgrade
leaves the previous version whole.

Why not Alembic: statesaga's tables live in the application's database,
beside whatever the application migrates itself (often with Alembic and its own
``alembic_version`` table). Migrations that run embedded, from any process, with
no ``alembic.ini`` or script folder, under our own lock, are a few lines of Core
DDL here; Alembic would add a configuration surface and a second version table
for no gain at this size.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import SchemaVersionError
from statesaga.store.schema import (
    SCHEMA_VERSION,
    bindings,
    deliveries,
    inbox,
    metadata,
    outbox,
    sagas,
    schema_version,
    signals,
)

#: An arbitrary constant: the PostgreSQL advisory lock statesaga's DDL takes.
ADVISORY_LOCK = 0x5A6A_5A6A


def _add_leases(conn: Connection) -> None:
    """Version 2: saga rows get an owner, a lease expiry and a lease epoch."""
    for name in ("owner", "lease_until", "lease_epoch"):
        column = sagas.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        extra = " NOT NULL DEFAULT 0" if name == "lease_epoch" else ""
        conn.exec_driver_sql(f"ALTER TABLE {sagas.name} ADD COLUMN {name} {kind}{extra}")


def _add_outbox(conn: Connection) -> None:
    """Version 3: the choreography's outbox and inbox tables, with their indexes."""
    outbox.create(conn)
    inbox.create(conn)


def _add_waits(conn: Connection) -> None:
    """Version 4: saga rows say what a wait step waits for; the signals table."""
    for name in ("waiting_for", "waiting_key", "wait_until"):
        kind = sagas.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {sagas.name} ADD COLUMN {name} {kind}")
    for index in sagas.indexes:
        if index.name == "statesaga_sagas_waiting":
            index.create(conn)
    signals.create(conn)


def _add_requests(conn: Connection) -> None:
    """Version 5: saga rows carry an operator's request, who asked and why."""
    for name in ("request", "request_by", "request_reason"):
        kind = sagas.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {sagas.name} ADD COLUMN {name} {kind}")


def _add_claim_indexes(conn: Connection) -> None:
    """Version 6: the two partial indexes a claim reads (see ``schema.py``)."""
    for index in sagas.indexes:
        if index.name in ("statesaga_sagas_ready", "statesaga_sagas_wakeup"):
            index.create(conn)


def _add_deliveries(conn: Connection) -> None:
    """Version 7: the embedded broker's bindings and deliveries tables, with their
    indexes (each created only where absent: new tables, whole or not there)."""
    bindings.create(conn, checkfirst=True)
    deliveries.create(conn, checkfirst=True)


#: Migration to each version from the one before it.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _add_leases,
    3: _add_outbox,
    4: _add_waits,
    5: _add_requests,
    6: _add_claim_indexes,
    7: _add_deliveries,
}


def found_version(conn: Connection) -> int | None:
    """The schema version recorded in the database; ``None`` if statesaga has no
    tables there at all.

    Raises:
        SchemaVersionError: statesaga's tables exist but no version is recorded.
    """
    tables = set(sa.inspect(conn).get_table_names())
    ours = {t.name for t in metadata.sorted_tables}
    if not tables & ours:
        return None
    if schema_version.name not in tables:
        raise SchemaVersionError.missing(SCHEMA_VERSION)
    version = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
    if version is None:
        raise SchemaVersionError.missing(SCHEMA_VERSION)
    return int(version)


def upgrade(engine: Engine) -> tuple[int | None, int]:
    """Create or upgrade the schema to ``SCHEMA_VERSION``.

    Returns:
        The version found (``None``: there was no schema) and the version now.

    Raises:
        SchemaVersionError: the database's schema is newer, unknown, or has no
            version recorded; nothing was changed.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        found = found_version(conn)
        if found is None:
            metadata.create_all(conn)
            _record(conn, SCHEMA_VERSION)
            return None, SCHEMA_VERSION
        check(found)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn)
            _record(conn, version)
    return found, SCHEMA_VERSION


def check(found: int) -> None:
    """Refuse a version this statesaga cannot upgrade from.

    Raises:
        SchemaVersionError: ``found`` is newer than ``SCHEMA_VERSION`` or not a
            version statesaga ever wrote.
    """
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(found, SCHEMA_VERSION)
    if found < 1:
        raise SchemaVersionError.unknown(found, SCHEMA_VERSION)


def _record(conn: Connection, version: int) -> None:
    conn.execute(schema_version.insert().values(version=version, applied_at=time.time()))
