"""The implied flow of a choreography, drawn from its participants' declarations.

A choreography has no coordinator, so no one place says what follows what: the
flow is implied by which participant handles which event and emits which. Each
participant declares exactly that (``@handles(event, emits=..., failures=...,
compensates=...)``, and ``emits`` for what it publishes on its own), and
statesaga enforces it when events are published, so the drawing made from the
declarations is the flow that runs.

The model is plain data (``ChoreographyModel``, like the saga ``GraphModel``:
the saga model is a state machine's, with one node per state, and a
choreography has no machine): one node per handler, titled by its participant,
plus a node for what each participant publishes on its own; one node per
event; edges from a handler to the events it emits, and from an event to the
handlers it triggers. The renderers speak the sagas' visual language (the
``palette``): blue the forward flow, red dashed a failure event, orange a
compensating handler, green an event that ends the flow (nobody handles it),
grey dotted an event handled but emitted by no participant here::

    from statesaga.diagrams.choreography import choreography_model, choreography_dot

    print(choreography_dot(choreography_model([Orders, Payments, Inventory])))

One business key's events, as the outbox and the inboxes hold them, are data
laid over the same model (``ChoreographyModel.with_trail``, or ``trail_model``
straight from the database), as a saga's log is laid over its graph model: the
events numbered in the order they were written, each drawn on the edge from
the handler that published it and on the edges to the handlers that processed
it, a dead letter in red, what the key's events never reached greyed out::

    write_choreography(trail_model(engine, [Orders, Payments, Inventory], "o-3"), "o-3.svg")

``statesaga diagram --choreography MODULE [--db URL --key KEY]`` draws either
from the shell. Why a model of its own, not the sagas' ``GraphModel``: that
one is a state machine's (states, transitions of kinds the machine defines,
a path replayed through the machine), and a choreography has no machine; the
two share the palette, the Graphviz rendering (``render_dot``) and the way an
instance is laid over a definition, not their nodes.

``python -m statesaga.diagrams.choreography MODULE FOLDER NAME [--check]`` writes
(or checks) ``FOLDER/NAME.{dot,mmd,svg}`` for the participants MODULE defines,
and ``FOLDER/NAME-example-run.*`` for the key its ``example_run`` runs, if it
has one.

Inside, as for the sagas' drawings: ``_choreography_model`` (the data, and its
extraction from the declarations), ``_choreography_overlay`` (the outbox and
inbox rows → one key's trail), ``_choreography_render`` (DOT, Mermaid and
images); this module re-exports them and keeps the files and the command line.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import Engine

from statesaga.choreography._participant import Participant
from statesaga.diagrams._choreography_model import (
    ChoreographyModel,
    EdgeKind,
    FlowEdge,
    FlowNode,
    NodeKind,
    choreography_model,
    trail_model,
)
from statesaga.diagrams._choreography_overlay import TrailEvent
from statesaga.diagrams._choreography_render import (
    choreography_dot,
    choreography_mermaid,
    render_choreography,
)
from statesaga.diagrams.render import render_dot
from statesaga.store._outbox import OutboxStore

__all__ = [
    "EXAMPLE",
    "STAMP",
    "ChoreographyModel",
    "EdgeKind",
    "FlowEdge",
    "FlowNode",
    "NodeKind",
    "TrailEvent",
    "choreography_dot",
    "choreography_mermaid",
    "choreography_model",
    "example_in",
    "files",
    "main",
    "participants_in",
    "render_choreography",
    "stale",
    "trail_model",
    "write",
]

# The classes and functions defined in the private modules report this one, the
# module a user imports them from (by its name, also when it runs as ``__main__``).
for _obj in (
    ChoreographyModel,
    FlowEdge,
    FlowNode,
    TrailEvent,
    choreography_dot,
    choreography_mermaid,
    choreography_model,
    render_choreography,
    trail_model,
):
    _obj.__module__ = "statesaga.diagrams.choreography"
del _obj


# -- files ------------------------------------------------------------------------------

#: Marks the SVG with the digest of the DOT it was drawn from.
STAMP = "<!-- statesaga choreography dot sha256:{} -->"


#: What a module may define to have an instance drawn beside its flow: a function that
#: runs one business key through the participants in the database it is given, and
#: returns the key.
EXAMPLE = "example_run"


def participants_in(module: str) -> list[type[Participant]]:
    """The participant classes a module defines or re-exports, by name."""
    mod = importlib.import_module(module)
    found = [
        v
        for v in vars(mod).values()
        if isinstance(v, type) and issubclass(v, Participant) and v is not Participant
    ]
    return sorted(found, key=lambda c: c.name)


def example_in(module: str) -> Callable[[Engine], str] | None:
    """The module's ``example_run`` function, if it has one."""
    found = getattr(importlib.import_module(module), EXAMPLE, None)
    return found if callable(found) else None


def files(
    participants: Sequence[type[Participant]],
    stem: str,
    example: Callable[[Engine], str] | None = None,
) -> dict[str, str]:
    """The DOT and Mermaid texts of the choreography, by file name; with an
    ``example``, also ``STEM-example-run``: the key it runs drawn over the flow
    (run in a temporary SQLite database)."""
    model = choreography_model(participants, stem)
    texts = {f"{stem}.dot": choreography_dot(model), f"{stem}.mmd": choreography_mermaid(model)}
    if example is not None:
        from statesaga.store import make_engine

        with tempfile.TemporaryDirectory() as folder:
            engine = make_engine(f"sqlite:///{Path(folder) / 'example.db'}")
            try:
                OutboxStore(engine).ensure_schema()
                run = trail_model(engine, participants, example(engine), stem)
            finally:
                engine.dispose()
        texts[f"{stem}-example-run.dot"] = choreography_dot(run)
        texts[f"{stem}-example-run.mmd"] = choreography_mermaid(run)
    return texts


def stale(
    participants: Sequence[type[Participant]],
    out: Path,
    stem: str,
    example: Callable[[Engine], str] | None = None,
) -> list[str]:
    """The files of ``out`` that differ from what ``write`` would write (an SVG:
    drawn from other DOT source)."""
    texts = files(participants, stem, example)
    found = [n for n, t in texts.items() if not (out / n).is_file() or (out / n).read_text() != t]
    for name, dot in texts.items():
        if not name.endswith(".dot"):
            continue
        svg = out / f"{name.removesuffix('.dot')}.svg"
        digest = hashlib.sha256(dot.encode()).hexdigest()
        if not svg.is_file() or STAMP.format(digest) not in svg.read_text():
            found.append(svg.name)
    return found


def write(
    participants: Sequence[type[Participant]],
    out: Path,
    stem: str,
    example: Callable[[Engine], str] | None = None,
) -> list[Path]:
    """Write ``out/STEM.{dot,mmd,svg}`` (and ``STEM-example-run.*`` with an
    ``example``); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    texts = files(participants, stem, example)
    for name, text in texts.items():
        (out / name).write_text(text)
        written.append(out / name)
        if not name.endswith(".dot"):
            continue
        svg = render_dot(text, "svg").decode()
        stamp = STAMP.format(hashlib.sha256(text.encode()).hexdigest())
        head, sep, rest = svg.partition("<svg")
        path = out / f"{name.removesuffix('.dot')}.svg"
        path.write_text(f"{head}{stamp}\n{sep}{rest}")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m statesaga.diagrams.choreography MODULE FOLDER NAME [--check]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if len(args) != 3:
        print("usage: python -m statesaga.diagrams.choreography MODULE FOLDER NAME [--check]")
        return 2
    module, folder, stem = args
    participants = participants_in(module)
    example = example_in(module)
    if check:
        bad = stale(participants, Path(folder), stem, example)
        for name in bad:
            print(f"stale: {Path(folder) / name}", file=sys.stderr)
        return 1 if bad else 0
    for path in write(participants, Path(folder), stem, example):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
