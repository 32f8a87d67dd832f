"""``statesaga list`` and ``statesaga show``: reading sagas, never writing.

Both open the database read-only (``Database.read_store``) and need no saga
definitions: a saga's row and log say everything they print. A definition, when
one is configured, only rebuilds ``show``'s results as their types.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from statesaga._status import SagaStatus
from statesaga.cli._db import Database
from statesaga.cli._options import (
    db_option,
    debug_option,
    definitions_option,
    definitions_setting,
    json_option,
    load_definitions,
    ran_on,
    read_saga,
)
from statesaga.cli._text import (
    SAGA_COLUMNS,
    Column,
    ago,
    clean,
    colour_on,
    number,
    plural,
    print_table,
    saga_cells,
    saga_title,
    status_styler,
    table,
    utc,
    width,
)

if TYPE_CHECKING:
    from statesaga._definition import Saga
    from statesaga._views import LogEntry
    from statesaga.store import LogRow, SagaRow

LIST_COLUMNS = (*SAGA_COLUMNS, Column("UPDATED"), Column("ERROR", wrap=True))


@click.command("list")
@db_option()
@click.option(
    "--status",
    type=click.Choice([s.value for s in SagaStatus]),
    help="Only sagas with this status.",
)
@click.option("--name", help="Only sagas of the definition with this name.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only sagas started at or after this time (UTC): 2026-11-28 or 2026-11-28T10:00:00.",
)
@click.option(
    "--before",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="Only sagas started before this time (UTC).",
)
@click.option("--error", "error_text", help="Only sagas whose error has this text.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many."
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Skip this many first (the next page: --offset 50).",
)
@json_option
@debug_option
def list_sagas(
    db: Database,
    status: str | None,
    name: str | None,
    since: datetime | None,
    before: datetime | None,
    error_text: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List sagas, newest first. Reads only.

    Ids are printed whole: `show` and `diagram` take them, or any prefix of one
    that no other id starts with. A line on standard error says how many there
    are in all and how to page (--offset, --limit).
    """
    after = None if since is None else since.replace(tzinfo=UTC).timestamp()
    until = None if before is None else before.replace(tzinfo=UTC).timestamp()
    store = db.read_store()
    try:
        rows = store.list(
            status=status,
            name=name,
            limit=limit,
            offset=offset,
            after=after,
            before=until,
            error=error_text,
        )
        exact = len(rows) < limit and (rows or offset == 0)
        total = (
            offset + len(rows)
            if exact
            else store.count(status=status, name=name, after=after, before=until, error=error_text)
        )
    finally:
        store.close()
    if as_json:
        page = {"total": total, "offset": offset, "limit": limit, "sagas": [_row(r) for r in rows]}
        click.echo(json.dumps(page, ensure_ascii=False, indent=1))
        return
    now = datetime.now(UTC)
    cells = [
        (
            *saga_cells(r.saga_id, r.status, r.name, r.version, _state(r.state, r.attempt)),
            ago(_time(r.updated_at), now),
            clean(r.error or ""),
        )
        for r in rows
    ]
    print_table(LIST_COLUMNS, cells)
    click.echo(_footer(len(rows), total, offset, status, name), err=True)


def _footer(shown: int, total: int, offset: int, status: str | None, name: str | None) -> str:
    which = " ".join(
        filter(None, [f"with status {status}" if status else "", f"named {name!r}" if name else ""])
    )
    sagas = f"sagas {which}" if which else "sagas"
    if total == 0:
        return f"no {sagas}"
    if shown == 0:
        return f"nothing past --offset {number(offset)}: there are {number(total)} {sagas}"
    if shown == total:
        return plural(total, "saga") + (f" {which}" if which else "")
    end = offset + shown
    page = f"{number(offset + 1)}-{number(end)} of {number(total)} {sagas}, newest first"
    if end < total:
        return f"{page}; next page: --offset {end} (page size: --limit)"
    return f"{page}; the last page"


def _state(state: str, attempt: int) -> str:
    return state if attempt <= 1 else f"{state} #{attempt}"


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _row(r: SagaRow) -> dict[str, Any]:
    return {
        "saga_id": r.saga_id,
        "name": r.name,
        "version": r.version,
        "fingerprint": r.fingerprint,
        "status": r.status,
        "state": r.state,
        "attempt": r.attempt,
        "error": r.error,
        "created_at": _time(r.created_at).isoformat(),
        "updated_at": _time(r.updated_at).isoformat(),
    }


@click.command()
@click.argument("saga_id")
@db_option()
@definitions_option(
    "Package of saga classes: results are shown as their types (optional: without "
    "it the log is shown as stored)."
)
@json_option
@debug_option
def show(saga_id: str, db: Database, definitions: str | None, as_json: bool) -> None:
    """Show one saga and its log, oldest entry first. Reads only.

    SAGA_ID is a saga's id, or any prefix of it that no other id starts with.
    """
    from statesaga._views import log_entry

    sagas = [] if as_json else optional_definitions(definitions)
    _, row, log = read_saga(db, saga_id)
    if as_json:
        document = {
            **_row(row),
            "input": json.loads(row.input),
            "due_at": None if row.due_at is None else _time(row.due_at).isoformat(),
            "log": [_log_row(r) for r in log],
        }
        click.echo(json.dumps(document, ensure_ascii=False, indent=1))
        return
    saga = ran_on(row, sagas)
    spec = saga.spec if saga is not None else None
    click.echo("\n".join(header(row)))
    click.echo("\n".join(timeline([log_entry(r, spec) for r in log])))


def optional_definitions(given: str | None) -> list[type[Saga]]:
    """The saga classes a reading command may use if it has them: those of
    ``--definitions`` (whose failure to load is an error), else of the configured
    package (whose failure is only noted: the command goes on without them)."""
    setting = definitions_setting(given, required=False)
    if setting is None:
        return []
    try:
        return load_definitions(setting)
    except (ImportError, click.ClickException) as exc:
        if given is not None:
            raise
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"note: going on without definitions: {message}", err=True)
        return []


def _log_row(r: LogRow) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "step": r.step,
        "status": r.status,
        "attempt": r.attempt,
        "result": None if r.result is None else json.loads(r.result),
        "error": r.error,
        "at": _time(r.at).isoformat(),
    }


def header(row: SagaRow) -> list[str]:
    """The lines above a stored saga's timeline: what it is and where it stands."""
    lines = [
        saga_title(row.saga_id, row.name, row.version, row.status),
        f"  created {utc(_time(row.created_at))}, updated {utc(_time(row.updated_at))}",
    ]
    if not SagaStatus(row.status).is_terminal:
        attempt = f", attempt {row.attempt}" if row.attempt > 1 else ""
        lines.append(f"  in {clean(row.state)}{attempt}")
        now = datetime.now(UTC).timestamp()
        if row.due_at is not None and row.due_at > now:
            lines.append(f"  next attempt due {utc(_time(row.due_at))}")
        if row.owner and row.lease_until and row.lease_until > now:
            lines.append(f"  held by {clean(row.owner)} until {utc(_time(row.lease_until))}")
    if row.error:
        lines.append(f"  error: {clean(row.error)}")
    return lines


TIMELINE_COLUMNS = (
    Column("#", right=True),
    Column("TIME", right=True),
    Column("STEP", wrap=True),
    Column("ENTRY"),
    Column("ATTEMPT", right=True),
    Column("RESULT / ERROR", wrap=True),
)


def timeline(history: Sequence[LogEntry]) -> list[str]:
    """A saga's log as table lines, oldest entry first, times from its start."""
    start = history[0].at if history else None
    cells = []
    for e in history:
        offset = f"+{(e.at - start).total_seconds() * 1000:.1f}ms" if start else ""
        detail = e.error if e.error else _result(e.result)
        cells.append(
            (
                str(e.seq),
                offset,
                clean(e.step),
                clean(e.status.value),
                str(e.attempt),
                clean(detail),
            )
        )
    if not cells:
        return ["  (no log entries yet)"]
    return list(
        table(TIMELINE_COLUMNS, cells, max_width=width(), style=status_styler(3, colour_on()))
    )


def _result(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool | list | dict):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
