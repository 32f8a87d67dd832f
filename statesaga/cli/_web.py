"""``statesaga web``: the operator console, served by uvicorn.

Starlette, Jinja2 and uvicorn come with the ``web`` extra; without them the
command says how to install them. Where it listens decides what it needs: on
loopback nothing more; elsewhere a token for actions (``--read-only`` needs
none), so that reaching the port is not enough to cancel a saga.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from statesaga.cli._db import Database
from statesaga.cli._errors import USAGE, fail
from statesaga.cli._options import db_option, debug_option, definitions_option
from statesaga.cli._reads import optional_definitions

if TYPE_CHECKING:
    from statesaga._definition import Saga

#: The environment variable that holds the operator token.
TOKEN_ENV = "STATESAGA_WEB_TOKEN"


@click.command()
@db_option()
@definitions_option("Saga classes to draw in full and to decode results with.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--read-only", is_flag=True, help="Show no operator actions, and refuse them; needs no token."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"A file holding the operator token (else ${TOKEN_ENV}). Actions then need it; "
    "on any address but loopback they always do.",
)
@debug_option
def web(
    db: Database,
    definitions: str | None,
    host: str,
    port: int,
    read_only: bool,
    token_file: Path | None,
) -> None:
    """Serve the operator console: sagas, their paths, and operator actions.

    Listens on 127.0.0.1 unless --host says otherwise. Beyond loopback it
    starts only with a token (STATESAGA_WEB_TOKEN or --token-file), which
    actions then need, or with --read-only.
    """
    missing = [m for m in ("starlette", "jinja2", "uvicorn", "multipart") if not _has(m)]
    if missing:
        raise fail(
            f"the web console needs {', '.join(missing)}: pip install 'statesaga[web]'", USAGE
        )
    from statesaga.web import binding_problem

    token = read_token(token_file)
    problem = binding_problem(host, token, read_only)
    if problem is not None:
        raise fail(problem, USAGE)
    sagas = optional_definitions(definitions)
    serve(db, sagas, host=host, port=port, token=token, read_only=read_only)


def read_token(token_file: Path | None) -> str | None:
    """The operator token: the file's first line, else ``$STATESAGA_WEB_TOKEN``."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot read --token-file {token_file}: {exc.strerror}", USAGE) from None
        token = text.strip()
        if not token:
            raise fail(f"--token-file {token_file} is empty", USAGE)
        return token
    return os.environ.get(TOKEN_ENV) or None


def serve(
    db: Database,
    sagas: list[type[Saga]],
    *,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
) -> None:
    """Open the database and run the console until Ctrl-C or SIGTERM."""
    import uvicorn

    from statesaga import SagaEngine
    from statesaga.web import create_app, is_loopback

    store = db.read_store()  # a missing database or schema is an error here, not a page
    if read_only:
        # Read-only all the way down: the connections themselves cannot write.
        engine = SagaEngine(store.engine)
    else:
        store.close()
        engine = db.engine()
    app = create_app(
        engine,
        token=token,
        read_only=read_only,
        definitions=sagas,
        hosts=_loopback_hosts(host) if is_loopback(host) else None,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"statesaga console on http://{shown}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        engine.close()


def _loopback_hosts(host: str) -> tuple[str, ...]:
    from statesaga.web._security import LOOPBACK_NAMES

    return (*LOOPBACK_NAMES, host)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
