"""The pytest plugin installed with statesaga: fixtures and Hypothesis profile."""

from __future__ import annotations

import os

from hypothesis import settings

from definitions.order import OrderRequest, OrderSaga
from statesaga import SagaEngine, SagaStatus


def test_plugin_fixtures_give_a_working_engine(
    statesaga_url: str, statesaga_engine: SagaEngine
) -> None:
    """statesaga_engine runs sagas on statesaga_url: SQLite by default, or the
    database STATESAGA_TEST_URL names."""
    expected = os.environ.get("STATESAGA_TEST_URL")
    assert statesaga_url == expected if expected else statesaga_url.startswith("sqlite:///")
    statesaga_engine.register(OrderSaga)
    run = statesaga_engine.run(OrderSaga, OrderRequest("c-1", 5.0))
    assert run.status is SagaStatus.COMPLETED


def test_plugin_registers_a_hypothesis_profile() -> None:
    """The 'statesaga' profile has no deadline, for tests that touch a database."""
    assert settings.get_profile("statesaga").deadline is None
