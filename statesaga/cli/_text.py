"""Text for terminals and pipes.

Whatever was read from the database (ids, errors, results, step names) goes
through ``clean`` before it is printed: control characters and the like are
shown as escapes, so a stored value can neither garble a terminal nor hide
what it says. Nothing is parsed as markup.

Tables are plain aligned columns, built in one pass (a listing of thousands of
rows prints in a blink). Some columns never break (ids, statuses); on a
terminal narrower than the table, the others wrap onto more lines. A pipe gets
every row on one line and no colour; so does a terminal with ``NO_COLOR`` set.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import IO

import attrs
import click

#: Colour of each status (of a saga or of a log entry) on a terminal.
STATUS_COLOURS = {
    "started": "cyan",
    "executing": "cyan",
    "retrying": "yellow",
    "compensating": "yellow",
    "compensation_retrying": "yellow",
    "compensated": "yellow",
    "completed": "green",
    "failed": "red",
    "failed_in_doubt": "red",
    "compensation_failed": "bright_red",
}

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(value: object) -> str:
    """``value`` as text that is safe to print: every non-printable character
    (control characters, escape sequences, bidirectional overrides) as an escape."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: standard output) is a terminal."""
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def colour_on(stream: IO[str] | None = None) -> bool:
    """Whether to colour what goes to ``stream``: on a terminal, unless ``NO_COLOR``."""
    return is_terminal(stream) and not os.environ.get("NO_COLOR")


def width() -> int | None:
    """The terminal's width, or ``None`` for a pipe (no wrapping)."""
    return shutil.get_terminal_size().columns if is_terminal() else None


@attrs.frozen
class Column:
    """A table column.

    Attributes:
        header: its title.
        wrap: whether its cells may wrap onto more lines when the table is too
            wide (ids and statuses never do).
        right: align right (numbers).
    """

    header: str
    wrap: bool = False
    right: bool = False


#: The narrowest a wrapping column gets; narrower, the row is stacked instead.
MIN_WRAP = 8
GAP = "  "
#: What separates the wrapping columns' cells on a stacked row's second line.
JOIN = " · "


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    max_width: int | None = None,
    style: Callable[[int, str], str] | None = None,
) -> Iterator[str]:
    """The lines of a table: a header, then each row.

    Args:
        columns: the columns.
        rows: the cells, already ``clean``.
        max_width: the width to fit, or ``None`` to keep every row on one line.
            When the table is wider, the columns that may wrap share what the
            others leave and their cells wrap; when that would leave them less
            than ``MIN_WRAP`` each, each row is *stacked* instead: the other
            columns on one line, then the wrapping columns' cells, joined, on
            indented lines of their own.
        style: colours a cell: ``style(column index, padded text)``.
    """
    natural = [len(c.header) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > natural[i]:
                natural[i] = len(cell)
    widths = _fit(columns, natural, max_width)
    if widths is None:
        assert max_width is not None
        yield from _stacked(columns, rows, natural, max_width, style)
        return
    last = len(columns) - 1
    yield _line([c.header for c in columns], columns, widths, last, None)
    for row in rows:
        if all(len(cell) <= w for cell, w in zip(row, widths, strict=True)):
            yield _line(row, columns, widths, last, style)
            continue
        parts = [
            _wrap(cell, w) if len(cell) > w and columns[i].wrap else [cell]
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        for n in range(max(len(p) for p in parts)):
            cells = [p[n] if n < len(p) else "" for p in parts]
            yield _line(cells, columns, widths, last, style if n == 0 else None)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def _fit(columns: Sequence[Column], natural: list[int], max_width: int | None) -> list[int] | None:
    """Column widths: each its natural width, unless the table is wider than
    ``max_width``; then the wrapping columns share what the others leave (a
    fixed column is never cut). ``None``: that would leave a wrapping column
    less than ``MIN_WRAP``; stack the rows instead."""
    total = sum(natural) + len(GAP) * (len(columns) - 1)
    if max_width is None or total <= max_width:
        return natural
    pairs = list(zip(columns, natural, strict=True))
    wrapping = sorted((n, i) for i, (c, n) in enumerate(pairs) if c.wrap)
    fixed = sum(n for c, n in pairs if not c.wrap)
    room = max_width - fixed - len(GAP) * (len(columns) - 1)
    widths = list(natural)
    for left, (n, i) in zip(range(len(wrapping), 0, -1), wrapping, strict=True):
        widths[i] = min(n, room // left)
        if widths[i] < min(n, MIN_WRAP):
            return None
        room -= widths[i]
    return widths


def _stacked(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    natural: list[int],
    max_width: int,
    style: Callable[[int, str], str] | None,
) -> Iterator[str]:
    """Rows too wide for the terminal: the fixed columns as a table, each row's
    wrapping cells on indented lines under it."""
    keep = [i for i, c in enumerate(columns) if not c.wrap]
    moved = [i for i, c in enumerate(columns) if c.wrap]
    top = [columns[i] for i in keep]
    widths = [natural[i] for i in keep]
    last = len(top) - 1

    def restyle(j: int, text: str) -> str:
        assert style is not None
        return style(keep[j], text)

    yield _line([c.header for c in top], top, widths, last, None)
    yield "    " + JOIN.join(columns[i].header for i in moved)
    for row in rows:
        yield _line([row[i] for i in keep], top, widths, last, restyle if style else None)
        detail = JOIN.join(row[i] for i in moved if row[i])
        for text in _wrap(detail, max(MIN_WRAP, max_width - 4)) if detail else []:
            yield f"    {text}"


def _line(
    cells: Sequence[str],
    columns: Sequence[Column],
    widths: Sequence[int],
    last: int,
    style: Callable[[int, str], str] | None,
) -> str:
    out = []
    for i, cell in enumerate(cells):
        if columns[i].right:
            text = cell.rjust(widths[i])
        else:
            text = cell if i == last else cell.ljust(widths[i])
        out.append(style(i, text) if style is not None and cell else text)
    return GAP.join(out).rstrip()


#: The columns that name a saga in every listing (the status is column 1).
SAGA_COLUMNS = (
    Column("SAGA ID"),
    Column("STATUS"),
    Column("DEFINITION", wrap=True),
    Column("STATE", wrap=True),
)


def saga_cells(saga_id: str, status: str, name: str, version: int, state: str) -> tuple[str, ...]:
    """The cells of ``SAGA_COLUMNS`` for one saga."""
    return (clean(saga_id), clean(status), clean(f"{name}@v{version}"), clean(state))


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], status_column: int = 1
) -> None:
    """Print a table on standard output: fitted to the terminal (in a pipe, a row
    a line), its status column coloured on a terminal. Nothing for no rows."""
    if rows:
        style = status_styler(status_column, colour_on())
        click.echo("\n".join(table(columns, rows, max_width=width(), style=style)))


def status_styler(column: int, colour: bool) -> Callable[[int, str], str] | None:
    """A ``style`` for ``table`` that colours the status in ``column`` (``None``:
    no colour)."""
    if not colour:
        return None

    def style(i: int, text: str) -> str:
        if i != column:
            return text
        return click.style(text, fg=STATUS_COLOURS.get(text.strip()))

    return style


def saga_title(saga_id: str, name: str, version: int, status: str) -> str:
    """The line that names a saga above its timeline: id, definition, status
    (coloured on a terminal)."""
    shown = clean(status)
    if colour_on():
        shown = click.style(shown, fg=STATUS_COLOURS.get(status), bold=True)
    return f"saga {clean(saga_id)}  {clean(name)}@v{version} → {shown}"


def number(n: int) -> str:
    """``n`` with thousands separators: ``5,000``."""
    return f"{n:,}"


def plural(n: int, word: str) -> str:
    """``1 saga``, ``5,000 sagas``."""
    return f"{number(n)} {word}{'' if n == 1 else 's'}"


def ago(then: datetime, now: datetime) -> str:
    """How long before ``now`` ``then`` was, in one unit: ``12s ago``, ``3h ago``."""
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def utc(at: datetime) -> str:
    """A time as ``2024-05-01 12:00:00 UTC``."""
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")
