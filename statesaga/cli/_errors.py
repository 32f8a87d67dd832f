"""How the ``statesaga`` command fails: one or two lines that say what is wrong
and what to do, and an exit code per kind of failure (``EXIT_CODES``).

``explain`` turns an exception into that line. It reads errors from the
database drivers by their message, since psycopg and sqlite3 say what went
wrong only there, and takes any password out of whatever it prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import click

OK = 0
#: The command ran and something it did failed (a saga not resumed, a stale diagram).
FAILED = 1
#: Bad options or arguments: nothing was done.
USAGE = 2
#: What was asked for is not there: a database file, a schema, a saga, a package.
NOT_FOUND = 3
#: The database could not be reached.
CONNECTION = 4
#: The database or the file system refused: login, permissions, a schema
#: version this statesaga cannot use.
REFUSED = 5
#: Interrupted (Ctrl-C).
INTERRUPTED = 130

EXIT_CODES = (
    "Exit codes: 0 done; 1 failed (some saga not resumed, diagrams stale, a "
    "definitions module that raises); 2 usage; 3 not found (database file, schema, "
    "saga, definitions package); 4 cannot reach the database; 5 refused (login, "
    "permissions, schema version)."
)


def fail(message: str, code: int = FAILED) -> click.ClickException:
    """An error the command reports as ``Error: message`` and exits with ``code``."""
    exc = click.ClickException(message)
    exc.exit_code = code  # type: ignore[misc]  # click reads it per instance
    return exc


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret in it replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def explain(exc: BaseException, where: str | None = None) -> tuple[int, str]:
    """The exit code and the message for an exception a command did not expect.

    Args:
        exc: the exception.
        where: the database it concerns (a URL without its password), if any.
    """
    from statesaga import _errors as errors

    if isinstance(exc, errors.SchemaVersionError):
        return REFUSED, str(exc)
    if isinstance(exc, errors.SagaNotFound | errors.SchemaMissing | errors.NotRegistered):
        return NOT_FOUND, str(exc)
    if isinstance(exc, errors.StateSagaError):
        return FAILED, str(exc)
    if isinstance(exc, ModuleNotFoundError):
        return NOT_FOUND, str(exc)
    if isinstance(exc, ImportError):
        return FAILED, str(exc)
    if type(exc).__module__.startswith("sqlalchemy"):
        return _database(exc, where)
    if isinstance(exc, FileNotFoundError):
        return NOT_FOUND, f"{_os_error(exc)}: no such file or folder"
    if isinstance(exc, PermissionError):
        return REFUSED, f"{_os_error(exc)}: permission denied"
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return USAGE, f"{_os_error(exc)}: {exc.strerror}"
    return FAILED, f"unexpected {type(exc).__name__}: {_first_line(exc)} (--debug shows where)"


def _os_error(exc: OSError) -> str:
    return f"cannot use {exc.filename}" if exc.filename else "cannot do that"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: Driver messages, lowercased, by what they mean.
_NO_DATABASE = re.compile(r'database ".*" does not exist')
_LOGIN = (
    "password authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "role ",
    "authentication",
)
_UNREACHABLE = (
    "connection refused",
    "could not translate host name",
    "name or service not known",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "could not connect",
    "server closed the connection",
    "connection is bad",
    "database is locked",
)
_DENIED = ("permission denied", "read-only", "readonly", "must be owner")


def _database(exc: BaseException, where: str | None) -> tuple[int, str]:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    text = text.split(" (Background on this error")[0]
    low = text.lower()
    db = f" ({where})" if where else ""
    if _NO_DATABASE.search(low):
        return NOT_FOUND, f"{text}{db}: create that database, or fix the name in the URL"
    if any(s in low for s in _LOGIN):
        return REFUSED, f"the server refused the login{db}: {text}; check the user and password"
    if any(s in low for s in _UNREACHABLE):
        return (
            CONNECTION,
            f"cannot reach the database{db}: {text}; check that it runs, and the host and "
            "port in the URL",
        )
    if any(s in low for s in _DENIED):
        return REFUSED, f"the database refused{db}: {text}"
    if "unable to open database file" in low:
        return NOT_FOUND, f"cannot open the SQLite file{db}: check the path and its permissions"
    if "file is not a database" in low:
        return REFUSED, f"not an SQLite database{db}: {text}"
    return FAILED, f"database error{db}: {text} (--debug shows where)"
