"""The ``statesaga`` command."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

import click
from rich.console import Console
from rich.table import Table

from statesaga.diagrams.cli import diagram, diagrams
from statesaga.engine import LogEntry, SagaEngine, SagaRun

console = Console(highlight=False)


def import_module(name: str) -> ModuleType:
    """Import a user module by dotted name, looking in the current directory first
    (as ``python -m`` does), so ``definitions.order`` works from a checkout."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise click.ClickException(
            f"cannot import {name!r}: {exc}. Run from the folder that contains it, "
            "or put it on PYTHONPATH."
        ) from exc


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
    """Run the order saga twice: once happily, once failing and compensating."""
    order = import_module("definitions.order")
    services_mod = import_module("definitions.services")
    services = services_mod.FakeServices()
    engine = SagaEngine(db)
    engine.register(order.OrderSaga(services))
    console.print(f"[bold]statesaga demo[/] on {db}\n")

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


main.add_command(diagram)
main.add_command(diagrams)
