"""PostgreSQL schemas for benchmarks that run worker processes (``waits.py``,
``workers.py``): a fresh schema with statesaga's tables per run, dropped after,
and the psycopg conninfo of a URL for their plain-psycopg floors."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from statesaga import SagaEngine


def fresh_schema(url: str) -> tuple[str, str]:
    """A new schema with statesaga's tables; returns (its name, a URL that uses it)."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    admin.dispose()
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"
    engine = SagaEngine(scoped)
    engine.upgrade()
    engine.close()
    return name, scoped


def drop_schema(url: str, name: str) -> None:
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    admin.dispose()


def libpq(url: str) -> str:
    """The psycopg conninfo of an SQLAlchemy URL."""
    u = sa.make_url(url)
    options = u.query.get("options")
    parts = [f"host={u.host}", f"port={u.port or 5432}", f"dbname={u.database}"]
    parts.append(f"user={u.username or 'postgres'}")
    if options:
        parts.append(f"options='{options}'")
    return " ".join(parts)
