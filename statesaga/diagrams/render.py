"""Render DOT source to SVG or PNG, in-process through ``pygraphviz`` (its wheel
bundles Graphviz) or else through a ``dot`` binary on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Literal

from statesaga._errors import StateSagaError
from statesaga.diagrams.dot import Direction, to_dot
from statesaga.diagrams.mermaid import to_mermaid
from statesaga.diagrams.model import GraphModel

Format = Literal["dot", "svg", "png", "mermaid"]
ImageFormat = Literal["svg", "png"]
Renderer = Literal["auto", "pygraphviz", "dot"]

FORMATS: tuple[Format, ...] = ("dot", "svg", "png", "mermaid")
#: The format a file name asks for, by its suffix.
SUFFIXES: dict[str, Format] = {
    ".dot": "dot",
    ".gv": "dot",
    ".svg": "svg",
    ".png": "png",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".md": "mermaid",
}

_lock = threading.Lock()

HOW_TO_GET_ONE = (
    "install pygraphviz (`pip install pygraphviz`: its wheels bundle Graphviz) "
    "or Graphviz itself so that `dot` is on PATH (`apt-get install graphviz`, "
    "`brew install graphviz`, https://graphviz.org/download/)"
)


class RenderError(StateSagaError, RuntimeError):
    """No Graphviz could render a diagram.

    Attributes:
        format: the image format asked for.
        reasons: why each renderer tried could not do it.
        dot_path: where the DOT source was written instead, if anywhere.
    """

    def __init__(self, format: str, reasons: list[str], dot_path: Path | None = None) -> None:
        wrote = f" The DOT source was written to {dot_path}." if dot_path else ""
        super().__init__(
            f"cannot render {format}: {'; '.join(reasons)}. To render, {HOW_TO_GET_ONE}.{wrote}"
        )
        self.format = format
        self.reasons = list(reasons)
        self.dot_path = dot_path


class DotError(StateSagaError, ValueError):
    """Graphviz rejected the DOT source (a malformed label or attribute)."""


def render_dot(source: str, format: ImageFormat = "svg", renderer: Renderer = "auto") -> bytes:
    """Lay out DOT ``source`` with Graphviz ``dot`` and render it.

    Args:
        source: DOT source text.
        format: ``svg`` or ``png``.
        renderer: ``pygraphviz`` (in-process), ``dot`` (the binary), or ``auto``:
            pygraphviz, falling back to the binary.

    Raises:
        RenderError: neither renderer is available or works; the message says
            how to get one.
        DotError: Graphviz rejected ``source``.
    """
    reasons: list[str] = []
    if renderer in ("auto", "pygraphviz"):
        try:
            return _render_pygraphviz(source, format)
        except DotError:
            raise
        except ImportError as exc:
            reasons.append(f"pygraphviz is not importable ({exc})")
        except Exception as exc:  # pygraphviz raises bare OSError/ValueError/...
            reasons.append(f"pygraphviz failed ({type(exc).__name__}: {exc})")
    if renderer in ("auto", "dot"):
        binary = shutil.which("dot")
        if binary is None:
            reasons.append("no `dot` binary on PATH")
        else:
            proc = subprocess.run(
                [binary, f"-T{format}"], input=source.encode(), capture_output=True, check=False
            )
            if proc.returncode == 0:
                _check_messages(proc.stderr.decode(errors="replace"))
                return proc.stdout
            reasons.append(f"`dot` failed: {proc.stderr.decode(errors='replace').strip()}")
    raise RenderError(format, reasons)


def _render_pygraphviz(source: str, format: ImageFormat) -> bytes:
    import pygraphviz

    # In-process Graphviz reports problems on file descriptor 2 and carries on
    # (a malformed label is dropped, not raised): capture what it says there.
    with _lock, tempfile.TemporaryFile() as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            graph = pygraphviz.AGraph(string=source)
            data = graph.draw(format=format, prog="dot")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        said = err.read().decode(errors="replace")
    _check_messages(said)
    assert isinstance(data, bytes)
    return data


def _check_messages(said: str) -> None:
    """Raise on Graphviz errors, warn on its warnings; drop other libraries' noise
    (a bundled fontconfig may complain about the system's configuration)."""
    lines = said.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Error:"):
            detail = " ".join(x.strip() for x in lines[i : i + 3])
            raise DotError(f"Graphviz rejected the DOT source: {detail}")
        if line.startswith("Warning:"):
            warnings.warn(f"Graphviz: {line[len('Warning:') :].strip()}", RuntimeWarning, 2)


def render(
    model: GraphModel,
    format: Format = "svg",
    *,
    direction: Direction = "LR",
    renderer: Renderer = "auto",
) -> bytes:
    """The diagram of ``model`` in ``format``, as bytes (text formats UTF-8).

    Raises:
        RenderError: an image format was asked for and no Graphviz works.
    """
    if format == "mermaid":
        return to_mermaid(model, direction=direction).encode()
    dot = to_dot(model, direction)
    if format == "dot":
        return dot.encode()
    return render_dot(dot, format, renderer)


def format_for(path: Path) -> Format:
    """The format a file name asks for, by its suffix; ``ValueError`` if unknown."""
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(SUFFIXES))
        raise ValueError(
            f"cannot tell the format of {path.name!r} from its suffix (known: {known}); "
            "give the format explicitly"
        ) from None


def write(
    model: GraphModel,
    path: str | Path,
    format: Format | None = None,
    *,
    direction: Direction = "LR",
    renderer: Renderer = "auto",
) -> Path:
    """Write the diagram of ``model`` to ``path``.

    Args:
        model: the graph model, with or without an instance overlay.
        path: the file to write.
        format: ``dot``, ``svg``, ``png`` or ``mermaid``; by default read off
            the suffix of ``path``.
        direction: ``LR`` or ``TB``.
        renderer: see ``render_dot``.

    Returns:
        The path written.

    Raises:
        RenderError: an image was asked for and no Graphviz works. The DOT
            source is then written beside ``path`` (same name, ``.dot``) so
            that it can be rendered elsewhere.
    """
    path = Path(path)
    fmt = format or format_for(path)
    if fmt not in ("svg", "png"):
        path.write_bytes(render(model, fmt, direction=direction))
        return path
    dot = to_dot(model, direction)
    try:
        data = render_dot(dot, fmt, renderer)
    except RenderError as exc:
        dot_path = path.with_suffix(".dot")
        dot_path.write_text(dot)
        raise RenderError(fmt, exc.reasons, dot_path) from exc
    path.write_bytes(data)
    return path
