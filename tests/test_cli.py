"""The ``statesaga`` command: demo, recover, list, show."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from click.testing import CliRunner

from definitions.order import OrderRequest, OrderSaga
from statesaga import SagaEngine
from statesaga.cli import main


def test_demo_runs_three_sagas(db_url: str) -> None:
    """The demo runs a happy, a compensating and a retried order and prints their logs."""
    result = CliRunner().invoke(main, ["demo", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert result.output.count("→ completed") == 2
    assert result.output.count("→ failed") == 1
    assert "compensated" in result.output and "ServiceError" in result.output


def test_recover_reports_resumed_and_skipped(
    db_url: str, new_engine: Callable[..., SagaEngine]
) -> None:
    """recover resumes what it can, names what it cannot with the reason, and exits 1."""
    engine = new_engine()
    engine.start(OrderSaga, OrderRequest("c", 1.0), saga_id="ok-1")
    engine.start(OrderSaga, OrderRequest("c", 2.0), saga_id="v9-1")
    with engine.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE statesaga_sagas SET version = 9 WHERE saga_id = 'v9-1'"))
    result = CliRunner().invoke(main, ["recover", "--db", db_url, "--definitions", "definitions"])
    assert result.exit_code == 1, result.output
    assert "ok-1" in result.output and "completed" in result.output
    assert "not resumed v9-1: it needs order v9" in " ".join(result.output.split())
    assert engine.get("ok-1").status.value == "completed"
    assert engine.get("v9-1").status.value == "started"


def test_list_and_show(db_url: str, new_engine: Callable[..., SagaEngine]) -> None:
    """list filters by status; show prints one saga's timeline; an unknown id is an error."""
    engine = new_engine()
    engine.run(OrderSaga, OrderRequest("c", 1.0), saga_id="done-1")
    engine.start(OrderSaga, OrderRequest("c", 1.0), saga_id="waiting-1")
    runner = CliRunner()
    listed = runner.invoke(main, ["list", "--db", db_url, "--status", "started"])
    assert listed.exit_code == 0 and "waiting-1" in listed.output and "done-1" not in listed.output
    shown = runner.invoke(main, ["show", "done-1", "--db", db_url])
    assert shown.exit_code == 0 and "confirm_order" in shown.output
    missing = runner.invoke(main, ["show", "nope", "--db", db_url])
    assert missing.exit_code == 1 and "no saga with id 'nope'" in missing.output
