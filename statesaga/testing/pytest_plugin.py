"""The statesaga pytest plugin (loaded automatically once statesaga is installed).

Fixtures:
    statesaga_url: a URL to an empty database: a temporary SQLite file, or the
        database given by ``--statesaga-url`` / ``STATESAGA_TEST_URL``.
    statesaga_engine: a ``SagaEngine`` on that database that does not sleep
        between retries.

Hypothesis profile ``statesaga``: no deadline (database round trips vary) and
the too-slow health check off; select it with ``--hypothesis-profile=statesaga``.
It is registered only where Hypothesis is installed (the ``test`` extra): without
it the plugin still loads, silently, with its fixtures, since pytest loads it in
every run of every environment statesaga is installed in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from statesaga._engine import SagaEngine

try:
    from hypothesis import HealthCheck, settings
except ModuleNotFoundError as exc:  # statesaga installed without its test extra
    if exc.name != "hypothesis":
        raise
else:
    settings.register_profile(
        "statesaga",
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("statesaga")
    group.addoption(
        "--statesaga-url",
        default=None,
        help="database URL for statesaga fixtures (default: STATESAGA_TEST_URL, else SQLite)",
    )


@pytest.fixture
def statesaga_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database URL for saga tests."""
    url = request.config.getoption("--statesaga-url") or os.environ.get("STATESAGA_TEST_URL")
    if url:
        return str(url)
    return f"sqlite:///{tmp_path_factory.mktemp('statesaga') / 'sagas.db'}"


@pytest.fixture
def statesaga_engine(statesaga_url: str) -> Iterator[SagaEngine]:
    """A ``SagaEngine`` for a test, closed afterwards; retry delays are not slept."""
    engine = SagaEngine(statesaga_url, sleep=lambda _s: None)
    yield engine
    engine.close()
