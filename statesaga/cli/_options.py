"""The options every command spells the same way, and what they resolve to.

``--db URL`` (or ``STATESAGA_DB``) is checked as it is parsed. ``--definitions
PKG`` falls back to ``STATESAGA_DEFINITIONS``, then to ``[tool.statesaga]
definitions`` in the nearest ``pyproject.toml``. ``-o/--output`` names what a
command writes, ``--json`` asks for JSON, ``--debug`` for tracebacks, and a
saga is named by its id or an unambiguous prefix of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from statesaga.cli._db import SUPPORTED, Database
from statesaga.cli._errors import NOT_FOUND, USAGE, fail
from statesaga.cli._text import clean

if TYPE_CHECKING:
    from statesaga._definition import Saga
    from statesaga._discovery import Setting
    from statesaga.store import LogRow, SagaRow, SqlStore

F = TypeVar("F", bound=Callable[..., Any])

#: ``ctx.meta`` key set by ``--debug``.
DEBUG = "statesaga.debug"
#: ``ctx.meta`` key of the command's checked ``--db`` (error messages name it, password hidden).
DATABASE = "statesaga.database"


def set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """The callback of ``--debug`` options (the group's and each command's)."""
    if value:
        ctx.meta[DEBUG] = True


def debug_option(f: F) -> F:
    """``--debug``: on an error, the traceback instead of a one-line message."""
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        envvar="STATESAGA_DEBUG",
        callback=set_debug,
        help="On an error, show its traceback instead of a one-line message.",
    )(f)


def parse_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> Database | None:
    """The callback of ``--db`` options: the URL, checked."""
    if value is None:
        return None
    db = Database.parse(value)
    ctx.meta[DATABASE] = db
    return db


def db_option(*, required: bool = True, what: str = "") -> Callable[[F], F]:
    """``--db URL``, or ``STATESAGA_DB``; the command receives a checked ``Database``."""
    return click.option(
        "--db",
        metavar="URL",
        envvar="STATESAGA_DB",
        show_envvar=True,
        required=required,
        callback=parse_db,
        help=f"Database{what}: {SUPPORTED}.",
    )


def definitions_option(what: str) -> Callable[[F], F]:
    """``--definitions PKG``; resolve it with ``definitions``."""
    return click.option(
        "--definitions",
        metavar="PKG",
        help=f"{what} Default: $STATESAGA_DEFINITIONS, else `definitions` under "
        "[tool.statesaga] in the nearest pyproject.toml.",
    )


def json_option(f: F) -> F:
    """``--json``: JSON on standard output, for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(f)


def definitions_setting(given: str | None, *, required: bool) -> Setting | None:
    """Which definitions package to load: ``--definitions``, else the environment,
    else ``pyproject.toml``.

    Raises:
        click.ClickException: the value is not a module name, or (``required``)
            nothing names a package (``USAGE``).
    """
    from statesaga._discovery import configured_definitions

    try:
        setting = configured_definitions(given)
    except ValueError as exc:
        raise fail(str(exc), USAGE) from None
    if setting is None and required:
        raise fail(
            "which sagas? give --definitions PKG (the package of your saga classes), set "
            'STATESAGA_DEFINITIONS, or put definitions = "myapp.sagas" under '
            "[tool.statesaga] in pyproject.toml",
            USAGE,
        )
    return setting


def load_definitions(setting: Setting) -> list[type[Saga]]:
    """The saga classes of ``setting``'s package.

    Raises:
        ModuleNotFoundError, ImportError: as ``load_sagas``.
        click.ClickException: the package has no saga classes (``NOT_FOUND``).
    """
    from statesaga._discovery import load_sagas

    sagas = load_sagas(setting.package, setting.root)
    if not sagas:
        raise fail(f"no saga classes in {setting.package!r} (from {setting.source})", NOT_FOUND)
    return sagas


def read_saga(db: Database, given: str) -> tuple[str, SagaRow, list[LogRow]]:
    """The stored saga ``given`` names (its id or a prefix), read read-only: its
    id, its row and its log.

    Raises:
        click.ClickException: no saga or several match (see ``resolve_id``).
        SchemaMissing, SchemaVersionError: as ``Database.read_store``.
    """
    store = db.read_store()
    try:
        saga_id = resolve_id(store, given, db.shown)
        row = store.get(saga_id)
        log = store.log(saga_id)
    finally:
        store.close()
    assert row is not None  # resolve_id found it
    return saga_id, row, log


def concurrency_option(default: int, what: str) -> Callable[[F], F]:
    """``--concurrency N``: sagas driven at once."""
    return click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help=f"Sagas driven at once{what}.",
    )


def ran_on(row: SagaRow, sagas: Sequence[type[Saga]]) -> type[Saga] | None:
    """The class among ``sagas`` that the stored saga ``row`` ran on: the same
    name, version and fingerprint."""
    for saga in sagas:
        spec = saga.spec
        if (spec.name, spec.version, spec.fingerprint) == (row.name, row.version, row.fingerprint):
            return saga
    return None


def resolve_id(store: SqlStore, given: str, where: str) -> str:
    """The saga id ``given`` names in the database ``where`` (its URL, for
    messages): itself, or the one id it is a prefix of.

    Raises:
        click.ClickException: no saga has that id or prefix (``NOT_FOUND``), or
            several do (``USAGE``, listing some).
    """
    if not given:
        raise fail("the saga id is empty", USAGE)
    if store.get(given) is not None:
        return given
    found = store.ids_starting_with(given, limit=6)
    if len(found) == 1:
        return found[0]
    if not found:
        raise fail(
            f"no saga with id {given!r} (nor an id starting with it) in {where}; "
            "`statesaga list` shows the ids",
            NOT_FOUND,
        )
    shown = ", ".join(clean(i) for i in found[:5]) + (", ..." if len(found) > 5 else "")
    raise fail(f"{given!r} is the start of several saga ids ({shown}); give more of the id", USAGE)
