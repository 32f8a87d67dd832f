"""The ``statesaga`` command, run as an operator runs it: the installed executable
in a subprocess, from a folder outside the repository, on the backend under test
(SQLite, or PostgreSQL with ``STATESAGA_TEST_URL``).

Issue #16's cases, by number: (1) reads never write; (2) errors are one or two
lines with an exit code per kind, no traceback, no password; (3) definitions
are found from the option, the environment or ``pyproject.toml``, reads need
none, the examples ship with the package; (4) ids, lists and paging for humans
and scripts; (7) ``-h``, consistent options, lazy imports, ``--format`` against
the suffix, readable reprs. Issue #9's ``worker``, ``db upgrade`` and
``recover`` are at the end.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from statesaga import SagaEngine, SagaStatus
from tests.conftest import PG_URL, backend, empty_database

STATESAGA = str(Path(sys.executable).with_name("statesaga"))
#: A bound on any one command: a guard against a hang, not a timing assertion.
TIMEOUT = 120
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Settings of the calling shell that would change what the command does.
UNSET = ("STATESAGA_DB", "STATESAGA_DEFINITIONS", "STATESAGA_DEBUG", "NO_COLOR", "PYTHONPATH")

#: A package of saga definitions outside the repository, as a user's would be.
MY_SAGAS = (
    '"""Sagas of an application, re-exported from the examples."""\n'
    "from statesaga.examples.order import OrderRequest, OrderSaga\n"
    '__all__ = ["OrderSaga"]\n'
)


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``statesaga ARGS`` in ``cwd`` with a clean environment (plus ``env``)."""
    environ = {k: v for k, v in os.environ.items() if k not in UNSET}
    environ.update(env or {})
    return subprocess.run(
        [STATESAGA, *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert that a command failed with ``code`` and at most two lines on standard
    error (no traceback, nothing on standard output), saying each of ``needles``."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, err)
    assert result.stdout == ""
    assert "Traceback" not in err
    assert 1 <= len(err.strip().splitlines()) <= 2, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def tables(url: str) -> list[str]:
    """The tables in the database (for SQLite: the file must exist)."""
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    """Run one statement on the database and commit."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the repository, with no pyproject.toml above it, holding a
    definitions package ``mysagas``."""
    folder = tmp_path_factory.mktemp("outside")
    assert not any((p / "pyproject.toml").exists() for p in (folder, *folder.parents))
    (folder / "mysagas").mkdir()
    (folder / "mysagas" / "__init__.py").write_text(MY_SAGAS)
    return folder


#: The sagas of the module's shared database, by role.
IDS = {
    "completed": f"order-{uuid.uuid4().hex}",
    "failed": f"order-{uuid.uuid4().hex}",
    "compensation_failed": f"order-{uuid.uuid4().hex}",
    "compensating": f"order-{uuid.uuid4().hex}",
    "evil": "evil-1",
}
#: A stored error that is rich markup, ANSI escapes and a bell, all at once.
EVIL = "x [/] y \x1b[2J\x07 [bold]end"
#: Sagas started and never run, besides those above.
WAITING = 57


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database for the tests that only read: a completed, a failed, a
    compensation_failed and a compensating saga with long ids, one whose error is
    hostile text, ids for prefix tests, and enough started sagas to page through."""
    with empty_database(tmp_path_factory) as url:
        services = FakeServices()
        engine = SagaEngine(url, sleep=lambda _s: None)
        engine.register(OrderSaga(services))
        engine.run(OrderSaga, OrderRequest("c", 1.0), saga_id=IDS["completed"])
        services.fail("inventory.reserve", times=None)
        engine.run(OrderSaga, OrderRequest("c", 2.0), saga_id=IDS["failed"])
        services.fail("payments.refund", times=None)
        engine.run(OrderSaga, OrderRequest("c", 3.0), saga_id=IDS["compensation_failed"])
        services.heal()
        for sid in (IDS["compensating"], IDS["evil"], "pfx-alpha-1", "pfx-alpha-2", "pfx-beta-1"):
            engine.start(OrderSaga, OrderRequest("c", 4.0), saga_id=sid)
        for i in range(WAITING):
            engine.start(OrderSaga, OrderRequest("c", float(i)), saga_id=f"waiting-{i:03d}")
        with engine.store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE statesaga_sagas SET status = 'compensating' WHERE saga_id = :s"),
                {"s": IDS["compensating"]},
            )
            conn.execute(
                sa.text("UPDATE statesaga_sagas SET error = :e WHERE saga_id = 'evil-1'"),
                {"e": EVIL},
            )
            conn.execute(
                sa.text("UPDATE statesaga_log SET error = :e WHERE saga_id = 'evil-1'"),
                {"e": EVIL},
            )
        engine.close()
        yield url


#: How many sagas ``shared`` holds.
TOTAL = len(IDS) + 3 + WAITING


# -- (1) reads never write ------------------------------------------------------


READS: Sequence[Sequence[str]] = (
    ("list",),
    ("show", "some-id"),
    ("diagram", "some-id", "-f", "mermaid"),
    ("recover", "--dry-run"),
)


def test_reads_of_a_missing_sqlite_file_create_nothing(tmp_path: Path) -> None:
    """(1) list, show, diagram of a saga and recover --dry-run on a mistyped SQLite
    path exit 3 saying there is no such file and how to create one; no file is
    left behind (no database, no -wal or -shm)."""
    for args in READS:
        result = run(*args, "--db", "sqlite:///typo.db", cwd=tmp_path)
        one_error(result, 3, "no database file", "typo.db", "statesaga db upgrade")
    assert list(tmp_path.iterdir()) == []


def test_reads_of_a_database_without_schema_create_nothing(outside: Path, db_url: str) -> None:
    """(1) On an existing database without statesaga's schema (an empty SQLite file,
    an empty PostgreSQL schema) every read exits 3 pointing at `statesaga db
    upgrade`, and afterwards the database still has no table."""
    if db_url.startswith("sqlite"):
        execute(db_url, "SELECT 1")  # an empty file
    for args in READS:
        result = run(*args, "--db", db_url, cwd=outside)
        one_error(result, 3, "no statesaga schema", "statesaga db upgrade")
    assert tables(db_url) == []


def test_recover_on_a_database_without_schema_creates_nothing(outside: Path, db_url: str) -> None:
    """(1) recover (not a dry run) has nothing to do where there is no schema: it
    says so and creates neither the schema nor, on SQLite, the file."""
    result = run("recover", "--db", db_url, "--definitions", "mysagas", cwd=outside)
    one_error(result, 3, "statesaga db upgrade")
    if db_url.startswith("sqlite"):
        assert not Path(str(sa.engine.make_url(db_url).database)).exists()
    else:
        assert tables(db_url) == []


def test_db_upgrade_creates_the_schema_and_reads_then_work(outside: Path, db_url: str) -> None:
    """(1, #9) `db upgrade` creates the schema (none → current), says so, does
    nothing the second time; a newer schema than this statesaga's is refused by
    reads with exit 5 and nothing changed."""
    first = run("db", "upgrade", "--db", db_url, cwd=outside)
    assert first.returncode == 0, first.stderr
    assert re.search(r"none → \d+ \(created\)", first.stdout)
    again = run("db", "upgrade", "--db", db_url, cwd=outside)
    assert "(already current)" in again.stdout
    listed = run("list", "--db", db_url, cwd=outside)
    assert listed.returncode == 0 and listed.stdout == ""
    assert listed.stderr.strip() == "no sagas"
    execute(db_url, "INSERT INTO statesaga_schema VALUES (99, 0)")
    one_error(run("list", "--db", db_url, cwd=outside), 5, "version 99", "newer")
    one_error(run("db", "upgrade", "--db", db_url, cwd=outside), 5, "version 99")


# -- (2) errors, not tracebacks ---------------------------------------------------


def test_bad_urls_are_usage_errors_that_name_the_supported_drivers(outside: Path) -> None:
    """(2) A URL statesaga cannot use exits 2 before connecting: another database
    names the supported ones, postgresql:// (psycopg2) names postgresql+psycopg://,
    sqlite://typo.db says three slashes; none prints the password."""
    cases = {
        "mysql://root:hunter2@localhost/sagas": ("mysql", "sqlite:///", "postgresql+psycopg://"),
        "postgresql+psycopg2://app:hunter2@localhost/sagas": ("psycopg2", "postgresql+psycopg://"),
        "postgres://app:hunter2@localhost/sagas": ("postgres://", "postgresql+psycopg://"),
        "sqlite://typo.db": ("names a host", "sqlite:///"),
        "not a url at all": ("not a database URL",),
        "sqlite+aiosqlite:///x.db": ("aiosqlite", "sqlite:///"),
    }
    for url, needles in cases.items():
        err = one_error(run("list", "--db", url, cwd=outside), 2, *needles)
        assert "hunter2" not in err


def test_unreachable_database_is_a_connection_error_without_the_password(outside: Path) -> None:
    """(2) A PostgreSQL port nothing listens on exits 4 in one or two lines that
    say what to check, and never show the URL's password."""
    url = "postgresql+psycopg://app:hunter2@127.0.0.1:1/sagas"
    for args in (("list",), ("show", "x"), ("db", "upgrade")):
        err = one_error(run(*args, "--db", url, cwd=outside), 4, "cannot reach", "port")
        assert "hunter2" not in err


@pytest.mark.skipif(backend() != "postgresql", reason="needs the PostgreSQL server")
def test_a_database_that_does_not_exist_on_the_server(outside: Path) -> None:
    """(2) A PostgreSQL database name that the server does not have exits 3 and
    says so, for reads and for `db upgrade` alike (nothing is created)."""
    url = sa.engine.make_url(PG_URL).set(database="nosuchdb_statesaga")
    text = url.render_as_string(hide_password=False)
    for args in (("list",), ("db", "upgrade")):
        one_error(run(*args, "--db", text, cwd=outside), 3, '"nosuchdb_statesaga" does not exist')


def test_sqlite_in_a_folder_that_does_not_exist(outside: Path) -> None:
    """(2) sqlite:///nodir/x.db: a read says there is no such file (3); a writer
    says the folder does not exist (3); no traceback either way."""
    one_error(run("list", "--db", "sqlite:///nodir/x.db", cwd=outside), 3, "no database file")
    one_error(
        run("db", "upgrade", "--db", "sqlite:///nodir/x.db", cwd=outside),
        3,
        "folder",
        "does not exist",
    )
    assert not (outside / "nodir").exists()


def test_diagram_errors_are_one_line(outside: Path) -> None:
    """(2) diagram into a folder that does not exist (3); of a module that raises
    on import or has a syntax error (1, naming the file and line); with an empty
    --definitions (2). --debug shows the traceback instead."""
    (outside / "raises_on_import.py").write_text("x = 1\nraise ValueError('boom')\n")
    (outside / "bad_syntax.py").write_text("def broken(:\n")
    target = "mysagas:OrderSaga"
    one_error(
        run("diagram", target, "-o", "/nonexistent/dir/x.svg", cwd=outside),
        3,
        "/nonexistent/dir",
        "does not exist",
    )
    one_error(
        run("diagram", "raises_on_import:X", cwd=outside),
        1,
        "raises_on_import.py, line 2",
        "ValueError: boom",
    )
    one_error(
        run("diagram", "bad_syntax:X", cwd=outside), 1, "bad_syntax.py, line 1", "SyntaxError"
    )
    one_error(
        run("diagram", "x", "--db", "sqlite:///x.db", "--definitions", "", cwd=outside),
        2,
        "not a Python module name",
    )
    debug = run("diagram", "raises_on_import:X", "--debug", cwd=outside)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ValueError: boom" in debug.stderr


def test_unknown_options_are_two_line_usage_errors(outside: Path) -> None:
    """(2, 7) A usage error is two lines: what is wrong, and how to get help (-h)."""
    err = one_error(run("list", "--nope", cwd=outside), 2, "No such option", "--nope")
    assert "statesaga list -h" in err


# -- (3) definitions ---------------------------------------------------------------


def test_reading_a_log_needs_no_definitions(shared: str, outside: Path, tmp_path: Path) -> None:
    """(3) In a folder with no definitions anywhere, show prints a saga from its log,
    and diagram draws it over what the log tells (with a note); given the
    definitions, the diagram shows the whole definition (the step never reached)."""
    shown = run("show", IDS["failed"], "--db", shared, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "→ failed" in shown.stdout and "reserve_inventory" in shown.stdout
    assert "ServiceError: inventory.reserve is unavailable" in shown.stdout
    drawn = run("diagram", IDS["failed"], "--db", shared, "-f", "mermaid", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "reserve_inventory" in drawn.stdout and IDS["failed"] in drawn.stdout
    assert "confirm_order" not in drawn.stdout
    assert "note: no definition of order v1" in drawn.stderr
    full = run(
        "diagram",
        IDS["failed"],
        "--db",
        shared,
        "-f",
        "mermaid",
        "--definitions",
        "mysagas",
        cwd=outside,
    )
    assert full.returncode == 0, full.stderr
    assert "confirm_order" in full.stdout and "note" not in full.stderr


def test_definitions_come_from_the_option_the_environment_or_pyproject(
    outside: Path, db_url: str, tmp_path: Path
) -> None:
    """(3) recover finds its definitions from --definitions, else STATESAGA_DEFINITIONS,
    else [tool.statesaga] in the nearest pyproject.toml (from a subfolder too); the
    option wins; with none it is a usage error that names all three ways."""
    run("db", "upgrade", "--db", db_url, cwd=outside)
    one_error(
        run("recover", "--db", db_url, cwd=outside),
        2,
        "--definitions",
        "STATESAGA_DEFINITIONS",
        "[tool.statesaga]",
    )
    by_env = run("recover", "--db", db_url, cwd=outside, env={"STATESAGA_DEFINITIONS": "mysagas"})
    assert by_env.returncode == 0, by_env.stderr
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "mysagas").mkdir()
    (project / "mysagas" / "__init__.py").write_text(MY_SAGAS)
    (project / "pyproject.toml").write_text('[tool.statesaga]\ndefinitions = "mysagas"\n')
    by_file = run("recover", "--db", db_url, cwd=project / "src")
    assert by_file.returncode == 0, by_file.stderr
    one_error(
        run("recover", "--db", db_url, "--definitions", "nosuch", cwd=project / "src"),
        3,
        "'nosuch'",
    )


def test_demo_runs_outside_the_repository(tmp_path: Path) -> None:
    """(3) The demo's sagas ship with statesaga: it runs in any folder, with no
    definitions, and its sagas can be listed afterwards."""
    result = run("demo", "--db", "sqlite:///demo.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("→ completed") == 2
    assert result.stdout.count("→ failed") == 1
    assert "compensated" in result.stdout and "ServiceError" in result.stdout
    listed = run("list", "--db", "sqlite:///demo.db", cwd=tmp_path)
    assert listed.stderr.strip() == "3 sagas"


# -- (4) ids and lists -------------------------------------------------------------


def test_list_prints_whole_ids_and_statuses_with_a_paging_footer(
    shared: str, outside: Path
) -> None:
    """(4) In a pipe: every id whole, every status whole (compensating and
    compensation_failed apart), no colour, and a footer on standard error that
    says how many there are and how to page; the last page says it is."""
    total = TOTAL
    first = run("list", "--db", shared, "--limit", "100", cwd=outside)
    assert first.returncode == 0, first.stderr
    assert "\x1b" not in first.stdout
    for role in ("completed", "failed", "compensation_failed", "compensating"):
        (line,) = [ln for ln in first.stdout.splitlines() if IDS[role] in ln]
        assert re.search(rf"\b{role}\b", line), line
    assert first.stderr.strip() == f"{total} sagas"
    page = run("list", "--db", shared, "--limit", "25", cwd=outside)
    assert page.stderr.strip() == (
        f"1-25 of {total} sagas, newest first; next page: --offset 25 (page size: --limit)"
    )
    assert len(page.stdout.splitlines()) == 26  # a header and 25 rows
    last = run("list", "--db", shared, "--limit", "25", "--offset", "50", cwd=outside)
    assert last.stderr.strip() == f"51-{total} of {total} sagas, newest first; the last page"
    beyond = run("list", "--db", shared, "--offset", "1000", cwd=outside)
    assert beyond.stderr.strip() == f"nothing past --offset 1,000: there are {total} sagas"
    started = run("list", "--db", shared, "--status", "started", "--limit", "5", cwd=outside)
    assert "of 61 sagas with status started" in started.stderr


def test_list_json_is_for_scripts(shared: str, outside: Path) -> None:
    """(4) --json: one document with the total, the page and each saga's fields."""
    result = run(
        "list", "--db", shared, "--json", "--limit", "3", "--status", "failed", cwd=outside
    )
    page = json.loads(result.stdout)
    assert page["total"] == 1 and page["limit"] == 3 and page["offset"] == 0
    (saga,) = page["sagas"]
    assert saga["saga_id"] == IDS["failed"] and saga["status"] == "failed"
    assert saga["error"].startswith("ServiceError")
    shown = json.loads(run("show", IDS["failed"], "--db", shared, "--json", cwd=outside).stdout)
    assert shown["input"]["total"] == 2.0
    assert [e["status"] for e in shown["log"]][:2] == ["executing", "completed"]


def test_a_terminal_gets_colour_and_wrapped_columns_but_whole_ids(
    shared: str, outside: Path
) -> None:
    """(4) On an 80-column terminal the table fits: the other columns wrap (or move
    to a line of their own under each row) while ids and statuses stay whole, and
    statuses are coloured (NO_COLOR turns that off)."""
    out = run_in_terminal(["list", "--db", shared, "--limit", "100"], cwd=outside)
    plain = ANSI.sub("", out)
    assert "\x1b[" in out
    for role in ("completed", "failed", "compensation_failed", "compensating"):
        (line,) = [ln for ln in plain.splitlines() if IDS[role] in ln]
        assert re.search(rf"\b{role}\b", line), line
    assert max(len(ln) for ln in plain.splitlines()) <= 80  # wraps or stacks, never cuts
    no_colour = run_in_terminal(
        ["list", "--db", shared, "--limit", "3"], cwd=outside, env={"NO_COLOR": "1"}
    )
    assert "\x1b[" not in no_colour


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Standard output of ``statesaga ARGS`` on an 80-column pseudo-terminal."""
    master, slave = pty.openpty()
    environ = {k: v for k, v in os.environ.items() if k not in UNSET}
    environ.update({"COLUMNS": "80", "LINES": "50", **(env or {})})
    proc = subprocess.Popen(
        [STATESAGA, *args], cwd=cwd, env=environ, stdout=slave, stderr=subprocess.DEVNULL
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_ids_may_be_given_by_an_unambiguous_prefix(shared: str, outside: Path) -> None:
    """(4) show and diagram take any prefix that only one id starts with; a prefix
    of several ids is a usage error listing them; none is not-found (3)."""
    shown = run("show", "pfx-b", "--db", shared, cwd=outside)
    assert shown.returncode == 0 and "pfx-beta-1" in shown.stdout
    drawn = run("diagram", "pfx-b", "--db", shared, "-f", "dot", cwd=outside)
    assert drawn.returncode == 0 and "pfx-beta-1" in drawn.stdout
    one_error(run("show", "pfx-alpha", "--db", shared, cwd=outside), 2, "pfx-alpha-1, pfx-alpha-2")
    one_error(run("show", "zzz", "--db", shared, cwd=outside), 3, "no saga with id 'zzz'")
    one_error(run("show", "PFX-B", "--db", shared, cwd=outside), 3, "'PFX-B'")  # case counts


def test_stored_text_is_escaped_not_interpreted(shared: str, outside: Path) -> None:
    """(4) A stored error holding markup, escape sequences and a bell is printed as
    text: list and show succeed and show the escapes, never the raw control bytes."""
    for args in (("list", "--status", "started", "--limit", "100"), ("show", "evil-1")):
        result = run(*args, "--db", shared, cwd=outside)
        assert result.returncode == 0, result.stderr
        assert "x [/] y \\x1b[2J\\x07 [bold]end" in result.stdout
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout


# -- (7) consistent and quick --------------------------------------------------------


def test_dash_h_works_everywhere(outside: Path) -> None:
    """(7) -h prints the help of the group and of every command."""
    from statesaga.cli import COMMANDS

    for args in (("-h",), *((name, "-h") for name in COMMANDS), ("db", "upgrade", "-h")):
        result = run(*args, cwd=outside)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("Usage: statesaga")


def test_the_help_lines_are_the_commands_own() -> None:
    """(7) `statesaga --help` lists the commands without importing them; each line
    is the first line of that command's own help."""
    import click

    from statesaga.cli import COMMANDS, main

    ctx = click.Context(main)
    for name, (_, line) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.help is not None
        assert command.help.splitlines()[0] == line


def test_the_cli_imports_only_what_a_command_needs() -> None:
    """(7) Importing the CLI and printing its help loads neither SQLAlchemy, nor
    transitions, nor the engine, nor the diagrams (what made every command slow)."""
    heavy = ["sqlalchemy", "transitions", "cattrs", "statesaga._engine", "statesaga.diagrams"]
    code = (
        "import sys\nfrom statesaga.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    assert out.stdout.splitlines()[-1] == "[]"


def test_the_lazy_public_names_are_all_there() -> None:
    """(7) statesaga imports its public names on first use: the table it imports
    them from lists exactly ``__all__``, and each is there once touched."""
    import statesaga

    listed = sorted(n for names in statesaga._SOURCES.values() for n in names)
    assert listed == sorted(statesaga.__all__)
    assert all(getattr(statesaga, n).__module__ == "statesaga" for n in statesaga.__all__)


def test_options_are_spelled_the_same_everywhere(shared: str, outside: Path) -> None:
    """(7) A saga is named the same way by show and diagram (SAGA_ID, or a prefix);
    -o/--output names what diagram and diagrams write (--out still works); a
    --format that contradicts the output's suffix is refused."""
    out = outside / "saga.mmd"
    drawn = run("diagram", IDS["failed"][:30], "--db", shared, "--output", str(out), cwd=outside)
    assert drawn.returncode == 0, drawn.stderr
    assert out.read_text().startswith("---")
    one_error(
        run(
            "diagram",
            "mysagas:OrderSaga",
            "-o",
            str(outside / "x.svg"),
            "--format",
            "png",
            cwd=outside,
        ),
        2,
        "contradicts",
        "x.png",
    )
    folder = outside / "drawn"
    for option in ("-o", "--output", "--out"):
        checked = run(
            "diagrams", "--definitions", "mysagas", option, str(folder), "--check", cwd=outside
        )
        assert checked.returncode == 1 and "order-v1.dot: missing" in checked.stderr


def test_reprs_are_short_and_readable() -> None:
    """(7) The engine, a spec and a machine have reprs that say what they are (the
    engine's without a password), not function addresses."""
    engine = SagaEngine("postgresql+psycopg://app:hunter2@127.0.0.1:1/sagas")
    engine.register(OrderSaga)
    try:
        text = repr(engine)
        assert "hunter2" not in text and "order@v1" in text and text.startswith("<SagaEngine")
    finally:
        engine.close()
    spec = repr(OrderSaga.spec)
    assert len(spec) < 300 and "function" not in spec and "order" in spec
    assert repr(OrderSaga.machine).startswith("<SagaMachine order@v1:")


# -- issue #9: worker, db upgrade, recover ----------------------------------------------


def test_recover_resumes_reports_and_dry_run_changes_nothing(outside: Path, db_url: str) -> None:
    """recover --dry-run lists each unfinished saga with what recover would do and
    changes no row; recover then resumes what it can, names what it cannot (its
    version is not in the definitions) and exits 1."""
    engine = SagaEngine(db_url)
    engine.register(OrderSaga)
    engine.start(OrderSaga, OrderRequest("c", 1.0), saga_id="ok-1")
    engine.start(OrderSaga, OrderRequest("c", 2.0), saga_id="v9-1")
    with engine.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE statesaga_sagas SET version = 9 WHERE saga_id = 'v9-1'"))

    def rows() -> list[tuple[object, ...]]:
        with engine.store.engine.connect() as conn:
            query = "SELECT * FROM statesaga_sagas ORDER BY saga_id"
            return [tuple(r) for r in conn.execute(sa.text(query))]

    before = rows()
    dry = run("recover", "--db", db_url, "--dry-run", "--definitions", "mysagas", cwd=outside)
    assert dry.returncode == 0, dry.stderr
    lines = {ln.split()[0]: ln for ln in dry.stdout.splitlines()[1:]}
    assert "resume it" in lines["ok-1"] and "order v9 is not in the definitions" in lines["v9-1"]
    assert "nothing was changed" in dry.stderr
    assert rows() == before

    mine = ("--db", db_url, "--definitions", "mysagas")
    done = run("recover", *mine, "--concurrency", "2", "--no-wait", cwd=outside)
    assert done.returncode == 1, done.stderr
    assert "not resumed v9-1: it needs order v9" in done.stdout
    assert engine.get("ok-1").status == SagaStatus.COMPLETED
    assert engine.get("v9-1").status == SagaStatus.STARTED
    engine.close()


def test_a_worker_drives_sagas_and_stops_on_sigterm(outside: Path, db_url: str) -> None:
    """`statesaga worker` claims sagas started by another process and drives them to
    their end; SIGTERM stops it gracefully (exit 0, saying so)."""
    environ = {k: v for k, v in os.environ.items() if k not in UNSET}
    mine = ("--db", db_url, "--definitions", "mysagas")
    proc = subprocess.Popen(
        [STATESAGA, "worker", *mine, "--concurrency", "2", "--poll", "0.05"],
        cwd=outside,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine = SagaEngine(db_url)
    try:
        engine.register(OrderSaga)
        ids = [engine.start(OrderSaga, OrderRequest("c", float(i))).saga_id for i in range(3)]
        wait_until(
            lambda: all(engine.get(i).status == SagaStatus.COMPLETED for i in ids),
            "the worker to complete the sagas",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
        engine.close()
    assert proc.returncode == 0, err
    assert "statesaga worker" in err and "stopped" in err


def wait_until(done: Callable[[], bool], what: str) -> None:
    """Poll ``done`` until it holds; fail after ``TIMEOUT`` seconds (a guard only)."""
    deadline = time.monotonic() + TIMEOUT
    while not done():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
