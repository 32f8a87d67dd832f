"""Opening the database a command names with ``--db``.

Commands that only read open it read-only and never create anything: SQLite
opens an existing file read-only (a missing file is an error, not a new
database), PostgreSQL runs read-only transactions, and a database without
statesaga's schema is an error that says how to create it. Commands that run
sagas (``demo``, ``worker``, ``recover``, ``db upgrade``) open it for writing.

Before anything connects, the URL is checked: a scheme statesaga cannot use
is named together with the ones it can, and no message shows a password.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from statesaga.cli._errors import NOT_FOUND, USAGE, fail

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from statesaga import SagaEngine
    from statesaga.store import SqlStore

SUPPORTED = (
    "sqlite:///PATH (SQLite; sqlite:////PATH for an absolute path) or "
    "postgresql+psycopg://USER@HOST[:PORT]/DB (PostgreSQL through psycopg 3)"
)
#: Drivers statesaga runs on, by backend: SQLAlchemy's driver name → importable module.
DRIVERS = {"sqlite": {"pysqlite": "sqlite3"}, "postgresql": {"psycopg": "psycopg"}}


class Database:
    """A checked ``--db`` URL (a plain class: attrs would cost every command's start-up).

    Attributes:
        url: the URL as given (with its password, for connecting).
        shown: the URL with its password hidden, for messages.
        password: the password, to take out of driver messages.
        sqlite_file: the SQLite file it names, or ``None`` (PostgreSQL, memory, ``file:`` URIs).
        memory: an in-memory SQLite database.
    """

    __slots__ = ("memory", "password", "shown", "sqlite_file", "url")

    def __init__(
        self, url: str, shown: str, password: str, sqlite_file: Path | None, memory: bool
    ) -> None:
        self.url = url
        self.shown = shown
        self.password = password
        self.sqlite_file = sqlite_file
        self.memory = memory

    def __repr__(self) -> str:
        return f"<Database {self.shown}>"

    @classmethod
    def parse(cls, url: str) -> Database:
        """Check a ``--db`` URL without connecting.

        Raises:
            click.UsageError: it is not a URL, or not one statesaga can use.
        """
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except ArgumentError:
            raise fail(
                f"--db {_scheme_only(url)!r} is not a database URL; use {SUPPORTED}", USAGE
            ) from None
        shown = parsed.render_as_string(hide_password=True)
        backend = parsed.drivername.partition("+")[0]
        drivers = DRIVERS.get(backend)
        if drivers is None:
            raise fail(
                f"statesaga cannot keep sagas in {parsed.drivername}:// databases; use {SUPPORTED}",
                USAGE,
            )
        driver = parsed.get_driver_name()  # the backend's default, if the URL names none
        if driver not in drivers:
            raise fail(
                f"{parsed.drivername}:// means the {driver} driver, which statesaga does not "
                f"use; use {SUPPORTED}",
                USAGE,
            )
        if importlib.util.find_spec(drivers[driver]) is None:  # pragma: no cover - a dependency
            raise fail(f"the {drivers[driver]} driver is not installed: pip install statesaga")
        sqlite_file = None
        memory = False
        if backend == "sqlite":
            if parsed.host:
                raise fail(
                    f"{shown} names a host ({parsed.host}); an SQLite file is sqlite:///PATH "
                    "(three slashes, relative) or sqlite:////PATH (four, absolute)",
                    USAGE,
                )
            database = parsed.database or ""
            memory = database in ("", ":memory:")
            if not memory and not database.startswith("file:"):
                sqlite_file = Path(database).absolute()
        return cls(url, shown, parsed.password or "", sqlite_file, memory)

    def _url(self) -> URL:
        from sqlalchemy.engine import make_url

        return make_url(self.url)

    # -- reading ------------------------------------------------------------

    def read_store(self) -> SqlStore:
        """A read-only store on the database, whose schema is checked.

        Raises:
            click.ClickException: the SQLite file does not exist (``NOT_FOUND``).
            SchemaMissing: the database has no statesaga schema.
            SchemaVersionError: its schema is another version.
        """
        from statesaga.store import SqlStore, make_engine

        if self.memory:
            raise fail(
                f"{self.shown} is an empty in-memory database: there is nothing to read; "
                "give the URL of a database file",
                NOT_FOUND,
            )
        if self.sqlite_file is not None and not self.sqlite_file.is_file():
            raise fail(
                f"no database file {self.sqlite_file} (from --db {self.shown}); check the path, "
                "or create it with `statesaga db upgrade --db URL`",
                NOT_FOUND,
            )
        url = self._url()
        if url.get_backend_name() == "postgresql":
            # make_engine's read-only connect_args would replace any ``options``
            # the URL carries (a search_path, say); add ours to them instead.
            given = url.query.get("options")
            given = " ".join(given) if isinstance(given, tuple) else given or ""
            options = f"{given} -c default_transaction_read_only=on".strip()
            read_only = url.update_query_dict({"options": options})
            engine = make_engine(read_only.render_as_string(hide_password=False))
        else:
            engine = make_engine(self.url, read_only=True)
        store = SqlStore(engine)
        try:
            store.require_schema()
        except BaseException:
            store.close()
            raise
        return store

    # -- writing ------------------------------------------------------------

    def engine(self) -> SagaEngine:
        """A ``SagaEngine`` on the database, which may create it and its schema.

        Raises:
            click.ClickException: the SQLite file's folder does not exist.
        """
        from statesaga import SagaEngine

        if self.sqlite_file is not None and not self.sqlite_file.parent.is_dir():
            raise fail(
                f"cannot create {self.sqlite_file}: the folder {self.sqlite_file.parent} does "
                "not exist",
                NOT_FOUND,
            )
        return SagaEngine(self.url)


def _scheme_only(url: str) -> str:
    """What of an unparseable URL is safe to show: up to its ``://``."""
    head, sep, _ = url.partition("://")
    if sep:
        return f"{head}{sep}..."
    return "..." if "@" in url else url[:60]
