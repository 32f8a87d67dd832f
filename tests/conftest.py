"""Shared fixtures: every test gets its own database.

The suite runs on SQLite by default. Set ``STATESAGA_TEST_URL`` to a
PostgreSQL URL (``postgresql+psycopg://postgres@127.0.0.1:5432/test``) to run it
there: each test then gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from statesaga import SagaEngine

PG_URL = os.environ.get("STATESAGA_TEST_URL", "")

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def backend() -> str:
    """``postgresql`` or ``sqlite``: the backend this run tests."""
    return "postgresql" if PG_URL else "sqlite"


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to an empty database of the backend under test."""
    with empty_database(tmp_path_factory) as url:
        yield url


@contextlib.contextmanager
def empty_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to an empty database of the backend under test (SQLite: a file not
    created yet; PostgreSQL: a schema of its own, dropped at the end); for
    fixtures of any scope."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'sagas.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def new_engine(db_url: str) -> Iterator[Callable[..., SagaEngine]]:
    """Make engines on the test's database (as separate processes would); all are
    closed at the end of the test."""
    made: list[SagaEngine] = []

    def make(**options: Any) -> SagaEngine:
        made.append(SagaEngine(db_url, **options))
        return made[-1]

    yield make
    for eng in made:
        eng.close()


@pytest.fixture
def engine(new_engine: Callable[..., SagaEngine]) -> SagaEngine:
    """A ``SagaEngine`` on a fresh database; retry delays are not slept."""
    return new_engine(sleep=lambda _s: None)
