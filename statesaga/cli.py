"""The ``statesaga`` command."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from statesaga import LogEntry, SagaEngine, SagaRun
from statesaga._discovery import find_sagas, import_module
from statesaga._errors import SagaNotFound
from statesaga._status import SagaStatus
from statesaga.diagrams.cli import diagram, diagrams

console = Console(highlight=False)


def _import(name: str) -> ModuleType:
    try:
        return import_module(name)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc


def _engine(db: str, definitions: str | None) -> SagaEngine:
    engine = SagaEngine(db)
    if definitions:
        _import(definitions)
        try:
            engine.register(*find_sagas(definitions))
        except (ImportError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    return engine


def timeline(run: SagaRun, history: list[LogEntry]) -> Table:
    """A saga's log as a table, oldest entry first."""
    colour = {"completed": "green", "failed": "red", "compensation_failed": "red"}
    table = Table(
        title=f"saga {run.name} {run.saga_id[:12]} → [bold]{run.status.value}[/]",
        title_justify="left",
    )
    for col in ("#", "time", "step", "entry", "attempt", "result / error"):
        table.add_column(col)
    start = history[0].at if history else None
    for e in history:
        offset = f"+{(e.at - start).total_seconds() * 1000:.1f}ms" if start else ""
        detail = e.error if e.error else ("" if e.result is None else repr(e.result))
        style = colour.get(e.status.value, "cyan" if "compensat" in e.status.value else "")
        table.add_row(
            str(e.seq),
            offset,
            e.step,
            f"[{style}]{e.status.value}[/]" if style else e.status.value,
            str(e.attempt),
            detail,
        )
    return table


@click.group()
@click.version_option(package_name="statesaga")
def main() -> None:
    """statesaga: declarative sagas compiled to state machines, persisted in SQL."""


@main.command()
@click.option(
    "--db", default="sqlite:///statesaga-demo.db", show_default=True, help="Database URL."
)
def demo(db: str) -> None:
    """Run the order saga three times: happily, failing and compensating, retrying."""
    order = _import("definitions.order")
    services_mod = _import("definitions.services")
    services = services_mod.FakeServices()
    console.print(f"[bold]statesaga demo[/] on {db}\n")
    with SagaEngine(db) as engine:
        engine.register(order.OrderSaga(services))
        _demo(engine, order, services)


def _demo(engine: SagaEngine, order: ModuleType, services: Any) -> None:
    console.print("1. A happy order: every step completes.")
    happy = engine.run(order.OrderSaga, order.OrderRequest("customer-1", 42.0))
    console.print(timeline(happy, engine.history(happy.saga_id)))

    console.print(
        "\n2. Inventory is out of stock: reserving fails, so the payment is refunded "
        "and the order cancelled, in reverse order."
    )
    services.fail("inventory.reserve", times=None)
    failed = engine.run(order.OrderSaga, order.OrderRequest("customer-2", 99.5))
    console.print(timeline(failed, engine.history(failed.saga_id)))
    services.heal()

    console.print(
        "\n3. The payment service flickers: charging fails twice, then succeeds on "
        "attempt 3 (its retry policy)."
    )
    services.fail("payments.charge", times=2)
    retried = engine.run(order.OrderSaga, order.OrderRequest("customer-3", 7.25))
    console.print(timeline(retried, engine.history(retried.saga_id)))


DB_OPTION = click.option("--db", required=True, help="Database URL, e.g. sqlite:///sagas.db.")
DEFINITIONS_OPTION = click.option(
    "--definitions",
    default="definitions",
    show_default=True,
    help="Package (or module) whose saga classes are registered.",
)


@main.command()
@DB_OPTION
@DEFINITIONS_OPTION
def recover(db: str, definitions: str) -> None:
    """Resume every incomplete saga; report those that cannot be resumed.

    Exits 1 when some saga could not be resumed (it is left untouched).
    """
    with _engine(db, definitions) as engine:
        report = engine.recover()
    table = Table(title=f"resumed {len(report.resumed)} saga(s)", title_justify="left")
    for col in ("saga", "definition", "status", "error"):
        table.add_column(col)
    for run in report.resumed:
        table.add_row(run.saga_id, f"{run.name}@v{run.version}", run.status.value, run.error or "")
    console.print(table)
    for err in report.skipped:
        console.print(f"[red]not resumed[/] {err.saga_id}: {err.reason}")
    if report.skipped:
        raise SystemExit(1)


@main.command("list")
@DB_OPTION
@click.option(
    "--status",
    type=click.Choice([s.value for s in SagaStatus]),
    help="Only sagas with this status.",
)
@click.option("--name", help="Only sagas of this definition name.")
@click.option("--limit", default=50, show_default=True, help="At most this many, newest first.")
def list_(db: str, status: str | None, name: str | None, limit: int) -> None:
    """List sagas, newest first."""
    with SagaEngine(db) as engine:
        sagas = engine.list(status=status, name=name, limit=limit)
    table = Table(title=f"{len(sagas)} saga(s)", title_justify="left")
    for col in ("saga", "definition", "status", "state", "attempt", "updated", "error"):
        table.add_column(col)
    for s in sagas:
        table.add_row(
            s.saga_id,
            f"{s.name}@v{s.version}",
            s.status.value,
            s.state,
            str(s.attempt),
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            s.error or "",
        )
    console.print(table)


@main.command()
@click.argument("saga_id")
@DB_OPTION
@DEFINITIONS_OPTION
def show(saga_id: str, db: str, definitions: str) -> None:
    """Show one saga's log as a timeline."""
    with _engine(db, definitions) as engine:
        try:
            run = engine.get(saga_id)
        except SagaNotFound as exc:
            raise click.ClickException(str(exc)) from exc
        console.print(timeline(run, engine.history(saga_id)))


main.add_command(diagram)
main.add_command(diagrams)
