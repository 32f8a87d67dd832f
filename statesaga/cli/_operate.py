"""The operator's commands: cancel, retry, resolve, pause, unpause a saga.

Each is the engine's action of the same name (``statesaga._operating``): a
fenced, logged transition, with who did it (``--actor``, default the user) and
why (``--reason``). The engine carries it out at once when ``--definitions``
(or the configured package) has the saga's definition and no live runner holds
it; otherwise the runner that holds it, or the next worker, does.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from statesaga.cli._errors import REFUSED, fail
from statesaga.cli._options import (
    db_option,
    debug_option,
    definitions_option,
    definitions_setting,
    load_definitions,
    resolve_id,
)
from statesaga.cli._text import clean

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine
    from statesaga._views import SagaRun
    from statesaga.cli._db import Database


def _actor(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:  # no user name to be had (a container without one)
        return "operator"


def _act(
    db: Database,
    definitions: str | None,
    given_id: str,
    action: str,
    call: Callable[[SagaEngine, str], SagaRun],
) -> None:
    from statesaga._errors import OperatorRefused
    from statesaga.cli._runs import register

    setting = definitions_setting(definitions, required=False)
    sagas = load_definitions(setting) if setting is not None else []
    engine = db.engine()
    try:
        register(engine, sagas)
        saga_id = resolve_id(engine.store, given_id, engine.store.url)
        try:
            run = call(engine, saga_id)
        except OperatorRefused as exc:
            raise fail(str(exc), REFUSED) from None
    finally:
        engine.close()
    click.echo(f"{action} {clean(saga_id)}: now {run.status.value} at {clean(run.state)}")


#: How each command acts: (engine, saga id, actor, reason) -> the saga now.
Action = Callable[["SagaEngine", str, str, "str | None"], "SagaRun"]


def _command(action: str, summary: str, act: Action, *, reason: bool) -> click.Command:
    @click.command(name=action, help=summary)
    @click.argument("saga_id")
    @db_option()
    @definitions_option("Package with the saga's definition (to carry the action out at once).")
    @click.option("--actor", help="Who does it (logged). Default: the user name.")
    @click.option(
        "--reason",
        required=reason,
        help="Why (logged)." + (" Required." if reason else ""),
    )
    @debug_option
    def command(
        saga_id: str, db: Database, definitions: str | None, actor: str | None, reason: str | None
    ) -> None:
        who = _actor(actor)
        _act(db, definitions, saga_id, action, lambda engine, sid: act(engine, sid, who, reason))

    return command


cancel = _command(
    "cancel",
    "Stop a running or waiting saga going forward: it compensates, and ends failed.",
    lambda engine, sid, who, why: engine.cancel(sid, why or "", actor=who),
    reason=True,
)
retry = _command(
    "retry",
    "Run a compensation_failed saga's compensations again, or a parked saga now.",
    lambda engine, sid, who, _why: engine.retry(sid, actor=who),
    reason=False,
)
resolve = _command(
    "resolve",
    "Close a compensation_failed saga that was handled by hand.",
    lambda engine, sid, who, why: engine.resolve(sid, why or "", actor=who),
    reason=True,
)
pause = _command(
    "pause",
    "Stop a saga from being driven until unpause.",
    lambda engine, sid, who, why: engine.pause(sid, actor=who, reason=why),
    reason=False,
)
unpause = _command(
    "unpause",
    "Let a paused saga be driven again.",
    lambda engine, sid, who, _why: engine.unpause(sid, actor=who),
    reason=False,
)
