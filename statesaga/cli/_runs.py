"""The commands that run sagas or change the database: ``demo``, ``recover``,
``worker`` and ``db upgrade``. Each may create the database and its schema,
except ``recover``, which has nothing to do where there is no schema (and
``recover --dry-run``, which only reads).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from statesaga.cli._db import Database
from statesaga.cli._errors import FAILED, fail
from statesaga.cli._options import (
    concurrency_option,
    db_option,
    debug_option,
    definitions_option,
    definitions_setting,
    json_option,
    load_definitions,
    parse_db,
)
from statesaga.cli._reads import timeline
from statesaga.cli._text import (
    SAGA_COLUMNS,
    Column,
    clean,
    number,
    plural,
    print_table,
    saga_cells,
    saga_title,
    utc,
)

if TYPE_CHECKING:
    from statesaga import SagaEngine
    from statesaga._definition import Saga
    from statesaga.store import SagaRow


def register(engine: SagaEngine, sagas: Sequence[type[Saga]]) -> None:
    """Register saga classes, each built without arguments.

    Raises:
        click.ClickException: a class cannot be built without arguments.
    """
    from statesaga._discovery import qualname

    for saga in sagas:
        try:
            instance = saga()
        except TypeError as exc:
            raise fail(
                f"cannot build {qualname(saga)}() without arguments ({exc}); the command line "
                "builds each saga class with none: give its parameters defaults, or run the "
                "worker in your application (engine.worker())"
            ) from exc
        engine.register(instance)


# -- demo -------------------------------------------------------------------


@click.command()
@click.option(
    "--db",
    metavar="URL",
    default="sqlite:///statesaga-demo.db",
    show_default=True,
    callback=parse_db,
    help="Database to run the demo in.",
)
@debug_option
def demo(db: Database) -> None:
    """Run the example order saga three times: happily, compensating, retrying.

    The sagas ship with statesaga (statesaga.examples), so this works anywhere.
    """
    from statesaga.examples.order import OrderRequest, OrderSaga
    from statesaga.examples.services import FakeServices

    services = FakeServices()
    click.echo(f"statesaga demo on {db.shown}\n")
    engine = db.engine()
    try:
        engine.register(OrderSaga(services))

        def run(what: str, request: OrderRequest) -> str:
            click.echo(what)
            done = engine.run(OrderSaga, request)
            click.echo(saga_title(done.saga_id, done.name, done.version, done.status.value))
            click.echo("\n".join(timeline(engine.history(done.saga_id))) + "\n")
            return done.saga_id

        run("1. A happy order: every step completes.", OrderRequest("customer-1", 42.0))
        services.fail("inventory.reserve", times=None)
        failed = run(
            "2. Inventory is out of stock: reserving fails, so the payment is refunded and "
            "the order cancelled, in reverse order.",
            OrderRequest("customer-2", 99.5),
        )
        services.heal()
        services.fail("payments.charge", times=2)
        run(
            "3. The payment service flickers: charging fails twice, then succeeds on "
            "attempt 3 (its retry policy).",
            OrderRequest("customer-3", 7.25),
        )
    finally:
        engine.close()
    url = db.shown
    click.echo(
        f"Look again: statesaga list --db {url}\n"
        f"            statesaga show {failed[:8]} --db {url}\n"
        f"            statesaga diagram {failed[:8]} --db {url} -o failed-order.svg"
    )


# -- recover ----------------------------------------------------------------


@click.command()
@db_option()
@definitions_option("Package whose saga classes are resumed.")
@concurrency_option(1, "")
@click.option(
    "--no-wait",
    is_flag=True,
    help="Leave a saga that reaches a retry delay parked for a worker, instead of waiting it out.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Change nothing: list the unfinished sagas and what recover would do with each.",
)
@json_option
@debug_option
def recover(
    db: Database,
    definitions: str | None,
    concurrency: int,
    no_wait: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Drive every unfinished saga that no live runner holds to its end.

    Safe beside running workers and other recovers: a saga someone else holds is
    left to them. A saga that cannot be resumed (its definition is not in
    --definitions, or changed) is reported and left untouched; then the exit code is 1.
    """
    if dry_run:
        _dry_run(db, definitions, as_json)
        return
    from statesaga._errors import SchemaVersionError

    setting = definitions_setting(definitions, required=True)
    assert setting is not None
    sagas = load_definitions(setting)
    try:  # nothing to recover where there is no schema: say so, create none
        db.read_store().close()
    except SchemaVersionError as exc:
        if exc.found is None or exc.found > exc.supported:
            raise  # recover upgrades an older schema, as every writer does
    engine = db.engine()
    try:
        register(engine, sagas)
        report = engine.recover(concurrency, wait=not no_wait)
    finally:
        engine.close()
    if as_json:
        document = {
            "resumed": [
                {
                    "saga_id": r.saga_id,
                    "name": r.name,
                    "version": r.version,
                    "status": r.status.value,
                    "state": r.state,
                    "error": r.error,
                }
                for r in report.resumed
            ],
            "skipped": [{"saga_id": e.saga_id, "reason": e.reason} for e in report.skipped],
        }
        click.echo(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        cells = [
            (*saga_cells(r.saga_id, r.status, r.name, r.version, r.state), clean(r.error or ""))
            for r in report.resumed
        ]
        print_table(RECOVERED_COLUMNS, cells)
        for err in report.skipped:
            click.echo(f"not resumed {clean(err.saga_id)}: {clean(err.reason)}")
        click.echo(
            f"resumed {plural(len(report.resumed), 'saga')}; "
            f"{len(report.skipped)} could not be resumed",
            err=True,
        )
    if report.skipped:
        raise SystemExit(FAILED)


RECOVERED_COLUMNS = (*SAGA_COLUMNS, Column("ERROR", wrap=True))
DRY_RUN_COLUMNS = (*SAGA_COLUMNS, Column("RECOVER WOULD", wrap=True))


def _dry_run(db: Database, definitions: str | None, as_json: bool) -> None:
    """List the unfinished sagas and what ``recover`` would do with each; read only."""
    from statesaga.cli._reads import optional_definitions

    sagas = optional_definitions(definitions)
    known = {(s.spec.name, s.spec.version): s.spec.fingerprint for s in sagas}
    store = db.read_store()
    try:
        rows = store.incomplete()
    finally:
        store.close()
    now = datetime.now(UTC).timestamp()
    plans = [(row, _plan(row, known if sagas else None, now)) for row in rows]
    if as_json:
        document = [
            {
                "saga_id": r.saga_id,
                "name": r.name,
                "version": r.version,
                "status": r.status,
                "state": r.state,
                "would": would,
            }
            for r, (_, would) in plans
        ]
        click.echo(json.dumps(document, ensure_ascii=False, indent=1))
        return
    cells = [
        (*saga_cells(r.saga_id, r.status, r.name, r.version, r.state), clean(would))
        for r, (_, would) in plans
    ]
    print_table(DRY_RUN_COLUMNS, cells)
    counts: dict[str, int] = {}
    for _, (kind, _) in plans:
        counts[kind] = counts.get(kind, 0) + 1
    parts = [f"{number(n)} {kind}" for kind, n in counts.items()]
    summary = f"{plural(len(plans), 'unfinished saga')}" + (
        f": {', '.join(parts)}" if parts else ""
    )
    if not sagas:
        summary += " (definitions not checked: give --definitions to see which can be resumed)"
    click.echo(f"{summary}; nothing was changed (--dry-run)", err=True)


def _plan(row: SagaRow, known: dict[tuple[str, int], str] | None, now: float) -> tuple[str, str]:
    """What recover would do with an unfinished saga: (kind, in words)."""
    if known is not None:
        fingerprint = known.get((row.name, row.version))
        if fingerprint is None:
            return "to skip", f"skip it: {row.name} v{row.version} is not in the definitions"
        if fingerprint != row.fingerprint:
            return "to skip", (
                f"skip it: {row.name} v{row.version} changed (fingerprint {fingerprint}, "
                f"the saga's {row.fingerprint})"
            )
    if row.owner and row.lease_until is not None and row.lease_until > now:
        until = utc(datetime.fromtimestamp(row.lease_until, UTC))
        return "held", f"leave it to {row.owner}, which holds it until {until}"
    if row.due_at is not None and row.due_at > now:
        due = utc(datetime.fromtimestamp(row.due_at, UTC))
        return "not due", f"leave it parked: its next attempt is due {due}"
    return "to resume", "resume it"


# -- worker -----------------------------------------------------------------


@click.command()
@db_option()
@definitions_option("Package whose saga classes the worker drives.")
@concurrency_option(8, "; the worker never claims more")
@click.option(
    "--poll",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Longest idle wait between claims, in seconds (how soon a saga started by "
    "another process is seen on SQLite; PostgreSQL tells at once).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a stop (SIGTERM, Ctrl-C) lets running handlers finish.",
)
@debug_option
def worker(
    db: Database, definitions: str | None, concurrency: int, poll: float, grace: float
) -> None:
    """Claim and drive sagas until SIGTERM or Ctrl-C.

    A stop lets running handlers finish (up to --grace seconds), then lets go of
    every saga; a second signal exits at once (the sagas' leases then expire and
    another worker takes them over). Creates the schema if the database has none.
    """
    setting = definitions_setting(definitions, required=True)
    assert setting is not None
    sagas = load_definitions(setting)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    engine = db.engine()
    try:
        register(engine, sagas)
        running = engine.worker(concurrency, poll=poll, grace=grace)
        keys = ", ".join(s.spec.key for s in sagas)
        click.echo(
            f"statesaga worker {engine.owner} on {db.shown}: {keys}; concurrency {concurrency}. "
            "SIGTERM or Ctrl-C stops it.",
            err=True,
        )
        running.run()
    finally:
        engine.close()
    click.echo("statesaga worker stopped", err=True)


# -- db ---------------------------------------------------------------------


@click.group("db")
def db_group() -> None:
    """The statesaga schema in a database."""


@db_group.command()
@db_option()
@debug_option
def upgrade(db: Database) -> None:
    """Create the schema, or upgrade an older one in place.

    Safe while other processes use the database or upgrade it too. A schema
    newer than this statesaga's is refused, and nothing is changed.
    """
    engine = db.engine()
    try:
        found, now = engine.upgrade()
    finally:
        engine.close()
    before = "none" if found is None else str(found)
    what = "created" if found is None else "already current" if found == now else "upgraded"
    click.echo(f"statesaga schema in {db.shown}: {before} → {now} ({what})")
