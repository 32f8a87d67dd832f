"""The ``statesaga`` command.

Starting it imports click and nothing else of weight: each command lives in a
module imported only when that command runs, and ``statesaga --help`` lists
them from ``COMMANDS`` (a test keeps those lines equal to the commands' own).

Every failure is one or two lines on standard error, saying what is wrong and
what to do, and an exit code per kind (``_errors.EXIT_CODES``); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from statesaga.cli._errors import EXIT_CODES, FAILED, INTERRUPTED, explain, fail, redact
from statesaga.cli._options import DATABASE, DEBUG, set_debug

if TYPE_CHECKING:
    from statesaga.cli._db import Database

#: Each command: where it is defined, and its line in ``statesaga --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "statesaga.cli._runs:demo",
        "Run the example order saga three times: happily, compensating, retrying.",
    ),
    "list": ("statesaga.cli._reads:list_sagas", "List sagas, newest first. Reads only."),
    "show": (
        "statesaga.cli._reads:show",
        "Show one saga and its log, oldest entry first. Reads only.",
    ),
    "diagram": (
        "statesaga.diagrams.cli:diagram",
        "Draw a saga or a choreography, or one saga's (or key's) path over it.",
    ),
    "diagrams": (
        "statesaga.diagrams.cli:diagrams",
        "Regenerate the diagrams of every saga in a package (DOT, Mermaid, SVG, index.md).",
    ),
    "recover": (
        "statesaga.cli._runs:recover",
        "Drive every unfinished saga that no live runner holds to its end.",
    ),
    "worker": ("statesaga.cli._runs:worker", "Claim and drive sagas until SIGTERM or Ctrl-C."),
    "relay": (
        "statesaga.cli._relay:relay",
        "Publish the choreography's outbox to its broker until SIGTERM or Ctrl-C.",
    ),
    "cancel": (
        "statesaga.cli._operate:cancel",
        "Stop a running or waiting saga going forward: it compensates, and ends failed.",
    ),
    "retry": (
        "statesaga.cli._operate:retry",
        "Run a compensation_failed saga's compensations again, or a parked saga now.",
    ),
    "resolve": (
        "statesaga.cli._operate:resolve",
        "Close a compensation_failed saga that was handled by hand.",
    ),
    "pause": ("statesaga.cli._operate:pause", "Stop a saga from being driven until unpause."),
    "unpause": ("statesaga.cli._operate:unpause", "Let a paused saga be driven again."),
    "db": ("statesaga.cli._runs:db_group", "The statesaga schema in a database."),
    "web": (
        "statesaga.cli._web:web",
        "Serve the operator console: sagas, their paths, and operator actions.",
    ),
}


class _Statesaga(click.Group):
    """The command group: commands loaded when used, failures explained."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, _, name = where[0].partition(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # a closed pipe (`statesaga show ID | head`) is handled by main()
        except Exception as exc:
            if ctx.meta.get(DEBUG):
                raise
            code, message = explain(exc, _database_shown(ctx))
            raise fail(redact(message, _secrets(ctx)), code) from None

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            _usage_error(exc)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (`statesaga list | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(FAILED)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: click.UsageError) -> None:
    """A usage error in two lines: what is wrong, and where the help is."""
    click.echo(f"Error: {exc.format_message()}", err=True)
    if exc.ctx is not None:
        option = exc.ctx.help_option_names[0] if exc.ctx.help_option_names else "--help"
        click.echo(f"Try '{exc.ctx.command_path} {option}' for help.", err=True)


def _database_shown(ctx: click.Context) -> str | None:
    db: Database | None = ctx.meta.get(DATABASE)
    return None if db is None else db.shown


def _secrets(ctx: click.Context) -> list[str]:
    db: Database | None = ctx.meta.get(DATABASE)
    return [] if db is None else [db.password]


@click.group(
    cls=_Statesaga,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(package_name="statesaga")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    envvar="STATESAGA_DEBUG",
    callback=set_debug,
    help="On an error, show its traceback instead of a one-line message.",
)
def main() -> None:
    """statesaga: declarative sagas compiled to state machines, persisted in SQL.

    Commands that only read (list, show, diagram of a stored saga, recover
    --dry-run) open the database read-only and never create it or its schema.
    """


__all__ = ["COMMANDS", "main"]
