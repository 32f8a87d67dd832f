"""The ``statesaga diagram`` and ``statesaga diagrams`` commands.

``diagram`` draws a definition (``MODULE:Class``) or a stored saga (its id, or
a prefix of it, with ``--db``). A stored saga is read read-only and drawn over
its definition when one of the configured definitions is the one it ran on;
otherwise over the definition its log tells (``statesaga.cli._from_log``), with
a note of what that leaves out. With ``--choreography MODULE`` it draws the flow
that MODULE's participants imply instead, and with ``--db`` and ``--key`` one
business key's events over it (``statesaga.diagrams.choreography``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from statesaga.cli._db import Database
from statesaga.cli._errors import FAILED, NOT_FOUND, USAGE, fail
from statesaga.cli._options import (
    db_option,
    debug_option,
    definitions_option,
    definitions_setting,
    load_definitions,
    ran_on,
    read_saga,
)
from statesaga.cli._text import clean

if TYPE_CHECKING:
    from statesaga._definition import Saga
    from statesaga.diagrams.model import GraphModel
    from statesaga.diagrams.render import Format

FORMATS = ("dot", "svg", "png", "mermaid")
#: ``package.module:Class``: a TARGET of this form is a saga class, any other a saga id.
CLASS_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _saga_class(target: str) -> type[Saga]:
    from statesaga._definition import Saga
    from statesaga._discovery import import_module

    module_name, _, attr = target.partition(":")
    obj = getattr(import_module(module_name), attr, None)
    if not (isinstance(obj, type) and issubclass(obj, Saga) and "spec" in obj.__dict__):
        raise fail(f"{target} is not a saga class", USAGE)
    return obj


@click.command("diagram")
@click.argument("target", required=False, metavar="[MODULE:Class | SAGA_ID]")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="File to write; its suffix gives the format. Default: standard output.",
)
@click.option(
    "-f",
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    help="Output format: by default the suffix of --output's, else dot. It must agree "
    "with a suffix that names a format.",
)
@click.option(
    "--direction",
    type=click.Choice(["LR", "TB"]),
    default="LR",
    show_default=True,
    help="Forward path left to right (LR) or top to bottom (TB).",
)
@click.option(
    "--saga",
    "saga_id",
    metavar="SAGA_ID",
    help="The stored saga to draw, when TARGET is its definition (or to read TARGET "
    "as a saga id whatever its form).",
)
@click.option(
    "--choreography",
    metavar="MODULE",
    help="Draw the flow that the choreography participants MODULE defines imply "
    "(instead of a saga).",
)
@click.option(
    "--key",
    metavar="KEY",
    help="With --choreography and --db: lay this business key's events, as the outbox "
    "and the inboxes hold them, over the flow.",
)
@db_option(required=False, what=" that holds the saga (or the choreography's events)")
@definitions_option(
    "Package whose saga classes a stored saga is drawn over (by name, version and "
    "fingerprint); without one it is drawn from its log alone."
)
@debug_option
def diagram(
    target: str | None,
    output: Path | None,
    format_: str | None,
    direction: str,
    saga_id: str | None,
    choreography: str | None,
    key: str | None,
    db: Database | None,
    definitions: str | None,
) -> None:
    """Draw a saga or a choreography, or one saga's (or key's) path over it.

    TARGET is a saga class (MODULE:Class) or, with --db, a stored saga's id or
    any prefix of it that no other id starts with. Reading a saga writes nothing.

    \b
    statesaga diagram definitions.order:OrderSaga -o order.svg
    statesaga diagram definitions.order:OrderSaga --format mermaid
    statesaga diagram 3f2c --db sqlite:///sagas.db -o saga.svg
    statesaga diagram --choreography definitions.choreography -o flow.svg
    statesaga diagram --choreography definitions.choreography --db URL --key o-1 -o o-1.svg
    """
    if choreography is not None or key is not None:
        _choreography(choreography, key, target or saga_id, db, output, format_, direction)
        return
    saga_class: type[Saga] | None = None
    if target is not None and saga_id is None and not CLASS_TARGET.fullmatch(target):
        target, saga_id = None, target  # a saga id
    if target is None and saga_id is None:
        raise click.UsageError("give a saga class (MODULE:Class), or a saga id with --db")
    if saga_id is not None and db is None:
        raise click.UsageError(
            f"{saga_id!r} is read as a saga id, which needs --db, the URL of the store that "
            "holds it (a saga class is MODULE:Class)"
        )
    fmt = _format(output, format_)
    if target is not None:
        if not CLASS_TARGET.fullmatch(target):
            raise fail(f"{target!r} is not MODULE:Class (e.g. definitions.order:OrderSaga)", USAGE)
        saga_class = _saga_class(target)
    if saga_id is None:
        from statesaga.diagrams.extract import model_of

        assert saga_class is not None
        model = model_of(saga_class)
    else:
        assert db is not None
        model = _stored(db, saga_id, saga_class, definitions)
    _emit(model, output, fmt, direction)


def _choreography(
    module: str | None,
    key: str | None,
    target: str | None,
    db: Database | None,
    output: Path | None,
    format_: str | None,
    direction: str,
) -> None:
    """Draw the flow of ``module``'s participants, with ``key``'s events over it if given."""
    from statesaga._discovery import import_module
    from statesaga.diagrams.choreography import (
        choreography_model,
        participants_in,
        render_choreography,
        trail_model,
    )
    from statesaga.diagrams.dot import Direction
    from statesaga.diagrams.render import RenderError

    if module is None:
        raise click.UsageError("--key draws a key's events over a choreography: add --choreography")
    if target is not None:
        raise click.UsageError("--choreography draws participants, not a saga: drop the saga")
    if key is not None and db is None:
        raise click.UsageError("--key reads the key's events from a database: add --db URL")
    fmt = _format(output, format_)
    import_module(module)  # a clear error if it is not there
    participants = participants_in(module)
    if not participants:
        raise fail(f"{module} defines no choreography participant", USAGE)
    stem = module.rpartition(".")[2]
    if key is None:
        model = choreography_model(participants, stem)
    else:
        assert db is not None
        store = db.read_store()
        try:
            model = trail_model(store.engine, participants, key, stem)
        finally:
            store.close()
        if not model.trail:
            click.echo(f"note: {db.shown} holds no event of key {clean(key)}", err=True)
    try:
        data = render_choreography(model, fmt, direction=cast(Direction, direction))
    except RenderError as exc:
        raise fail(str(exc), FAILED) from exc
    if output is None:
        if fmt == "png" and sys.stdout.isatty():
            raise click.UsageError("PNG is binary: write it to a file with -o FILE.png")
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    output.write_bytes(data)
    click.echo(f"wrote {output}", err=True)


def _format(output: Path | None, given: str | None) -> Format:
    """The output format: ``--format``, else the suffix's, else DOT; a ``--format``
    that contradicts the suffix, or an output that cannot be written, is an error
    before anything is drawn."""
    from statesaga.diagrams.render import SUFFIXES

    if output is None:
        return cast("Format", given or "dot")
    if output.is_dir():
        raise fail(f"{output} is a folder; give a file name such as {output / 'saga.svg'}", USAGE)
    if not output.parent.is_dir():
        raise fail(f"cannot write {output}: the folder {output.parent} does not exist", NOT_FOUND)
    by_suffix = SUFFIXES.get(output.suffix.lower())
    if given is not None and by_suffix is not None and given != by_suffix:
        raise fail(
            f"--format {given} contradicts {output.name}, whose suffix means {by_suffix}; "
            f"drop --format, or name the file {output.with_suffix('.' + _suffix(given)).name}",
            USAGE,
        )
    if given is None and by_suffix is None:
        known = ", ".join(sorted(SUFFIXES))
        raise fail(
            f"cannot tell the format of {output.name} from its suffix (known: {known}); "
            "give --format",
            USAGE,
        )
    return cast("Format", given or by_suffix)


def _suffix(fmt: str) -> str:
    return "mmd" if fmt == "mermaid" else fmt


def _stored(
    db: Database, given: str, saga_class: type[Saga] | None, definitions: str | None
) -> GraphModel:
    """The model of a stored saga: over ``saga_class`` if given (it must be the
    saga's definition), else over the configured definition that is, else over
    what its log tells."""
    from statesaga._discovery import qualname
    from statesaga._machine import SagaMachine
    from statesaga._views import log_entry
    from statesaga.cli._from_log import spec_from_log
    from statesaga.cli._reads import optional_definitions
    from statesaga.diagrams.extract import build_model
    from statesaga.diagrams.sources import DefinitionNotFound

    sagas = [saga_class] if saga_class is not None else optional_definitions(definitions)
    saga_id, row, log = read_saga(db, given)
    found = ran_on(row, sagas)
    if found is None and saga_class is not None:  # the class given is not the saga's
        raise DefinitionNotFound(
            saga_id,
            row.name,
            row.version,
            row.fingerprint,
            f"{qualname(saga_class)} is {saga_class.spec.key} with fingerprint "
            f"{saga_class.spec.fingerprint}",
        )
    if found is not None:
        spec, machine = found.spec, found.machine
    else:
        click.echo(
            f"note: no definition of {clean(row.name)} v{row.version} (fingerprint "
            f"{clean(row.fingerprint)}) at hand, so the saga is drawn over what its log "
            "tells: steps it never reached and the names of compensations are unknown; "
            "--definitions PKG draws the whole definition",
            err=True,
        )
        spec = spec_from_log(row, log)
        machine = SagaMachine(spec)
    history = [log_entry(r, spec) for r in log]
    return build_model(spec, machine).with_path(
        history, row.status, saga_id=saga_id, error=row.error
    )


def _emit(model: GraphModel, output: Path | None, fmt: Format, direction: str) -> None:
    from statesaga.diagrams.dot import Direction
    from statesaga.diagrams.render import RenderError, render, write

    way = cast(Direction, direction)
    try:
        if output is None:
            if fmt == "png" and sys.stdout.isatty():
                raise click.UsageError("PNG is binary: write it to a file with -o FILE.png")
            data = render(model, fmt, direction=way)
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        write(model, output, fmt, direction=way)
    except RenderError as exc:
        raise fail(str(exc), FAILED) from exc
    click.echo(f"wrote {output}", err=True)


@click.command("diagrams")
@definitions_option("Package whose saga classes are drawn (every module in it is imported).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("diagrams"),
    show_default=True,
    help="Folder to write.",
)
@click.option("--out", "out_alias", type=click.Path(path_type=Path), hidden=True)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 listing every file that is stale, missing or left over.",
)
@click.option(
    "--force", is_flag=True, help="Render every SVG again, even those drawn from the same DOT."
)
@debug_option
def diagrams(
    definitions: str | None, output: Path, out_alias: Path | None, check: bool, force: bool
) -> None:
    """Regenerate the diagrams of every saga in a package (DOT, Mermaid, SVG, index.md)."""
    from statesaga.diagrams.generate import generate
    from statesaga.diagrams.render import RenderError

    out = out_alias or output  # --out: the old spelling of --output
    setting = definitions_setting(definitions, required=True)
    assert setting is not None
    sagas = load_definitions(setting)
    try:
        report = generate(sagas, out, check=check, force=force)
    except RenderError as exc:
        raise fail(str(exc), FAILED) from exc
    if check:
        if report.stale:
            click.echo(
                f"{out}/ is stale; run `statesaga diagrams` and commit the result:", err=True
            )
            for path, why in report.stale:
                click.echo(f"  {path}: {why}", err=True)
            sys.exit(FAILED)
        click.echo(f"{out}/ is up to date ({len(sagas)} sagas)")
        return
    for path in report.written:
        click.echo(f"wrote {path}")
    for path in report.removed:
        click.echo(f"removed {path}")
    if not report.written and not report.removed:
        click.echo(f"{out}/ was already up to date ({len(sagas)} sagas)")
