"""The ``statesaga diagram`` and ``statesaga diagrams`` commands."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import cast

import click

from statesaga._definition import Saga
from statesaga._discovery import import_module, load_sagas
from statesaga._engine import SagaEngine
from statesaga._errors import HistoryMismatch, SagaNotFound
from statesaga.diagrams.dot import Direction
from statesaga.diagrams.extract import model_of
from statesaga.diagrams.generate import generate
from statesaga.diagrams.model import GraphModel
from statesaga.diagrams.render import FORMATS, Format, RenderError, format_for, render, write
from statesaga.diagrams.sources import DefinitionNotFound, instance_model


def _import(name: str) -> ModuleType:
    try:
        return import_module(name)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc


def _saga_class(target: str) -> type[Saga]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(
            f"{target!r} is not MODULE:Class (e.g. definitions.order:OrderSaga)",
            param_hint="TARGET",
        )
    obj = getattr(_import(module_name), attr, None)
    if not (isinstance(obj, type) and issubclass(obj, Saga) and "spec" in obj.__dict__):
        raise click.BadParameter(f"{target} is not a saga class", param_hint="TARGET")
    return obj


def _sagas(package: str) -> list[type[Saga]]:
    try:
        return load_sagas(package)
    except ImportError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("diagram")
@click.argument("target", required=False, metavar="[MODULE:Class]")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write; its suffix gives the format. Default: standard output.",
)
@click.option(
    "-f",
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    help="Output format (default: from the suffix of -o, else dot).",
)
@click.option(
    "--direction",
    type=click.Choice(["LR", "TB"]),
    default="LR",
    show_default=True,
    help="Forward path left to right (LR) or top to bottom (TB).",
)
@click.option("--saga", "saga_id", help="Draw this saga's path over its definition.")
@click.option("--db", help="Database URL of the store that holds --saga.")
@click.option(
    "--definitions",
    default="definitions",
    show_default=True,
    help="Package whose saga classes --saga is looked up in (by name and version).",
)
def diagram(
    target: str | None,
    output: Path | None,
    format_: str | None,
    direction: str,
    saga_id: str | None,
    db: str | None,
    definitions: str,
) -> None:
    """Draw a saga definition, or one saga's path over it.

    \b
    statesaga diagram definitions.order:OrderSaga -o order.svg
    statesaga diagram definitions.order:OrderSaga --format mermaid
    statesaga diagram --saga ID --db sqlite:///sagas.db -o saga.svg
    """
    if target is None and saga_id is None:
        raise click.UsageError("give a saga class (MODULE:Class) or --saga ID with --db")
    if saga_id is not None and db is None:
        raise click.UsageError("--saga needs --db, the URL of the store that holds it")
    try:
        fmt = cast(Format, format_) if format_ else format_for(output) if output else "dot"
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="-o") from exc

    if saga_id is None:
        assert target is not None
        model = model_of(_saga_class(target))
    else:
        assert db is not None
        sagas = [_saga_class(target)] if target else _sagas(definitions)
        engine = SagaEngine(db)
        try:
            model = instance_model(engine, saga_id, sagas)
        except (SagaNotFound, DefinitionNotFound, HistoryMismatch) as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            engine.close()
    _emit(model, output, fmt, cast(Direction, direction))


def _emit(model: GraphModel, output: Path | None, fmt: Format, direction: Direction) -> None:
    try:
        if output is None:
            data = render(model, fmt, direction=direction)
            if fmt == "png" and sys.stdout.isatty():
                raise click.UsageError("PNG is binary: write it to a file with -o FILE.png")
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        write(model, output, fmt, direction=direction)
    except RenderError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {output}", err=True)


@click.command("diagrams")
@click.option(
    "--definitions",
    default="definitions",
    show_default=True,
    help="Package whose saga classes are drawn (every module in it is imported).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("diagrams"),
    show_default=True,
    help="Folder to write.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 listing every file that is stale, missing or left over.",
)
@click.option(
    "--force", is_flag=True, help="Render every SVG again, even those drawn from the same DOT."
)
def diagrams(definitions: str, out: Path, check: bool, force: bool) -> None:
    """Regenerate the diagrams of every saga in a package (DOT, Mermaid, SVG, index.md)."""
    sagas = _sagas(definitions)
    if not sagas:
        raise click.ClickException(f"no saga classes found in {definitions!r}")
    try:
        report = generate(sagas, out, check=check, force=force)
    except RenderError as exc:
        raise click.ClickException(str(exc)) from exc
    if check:
        if report.stale:
            click.echo(
                f"{out}/ is stale; run `statesaga diagrams` and commit the result:", err=True
            )
            for path, why in report.stale:
                click.echo(f"  {path}: {why}", err=True)
            sys.exit(1)
        click.echo(f"{out}/ is up to date ({len(sagas)} sagas)")
        return
    for path in report.written:
        click.echo(f"wrote {path}")
    for path in report.removed:
        click.echo(f"removed {path}")
    if not report.written and not report.removed:
        click.echo(f"{out}/ was already up to date ({len(sagas)} sagas)")
