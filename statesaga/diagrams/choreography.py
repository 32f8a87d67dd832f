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

``python -m statesaga.diagrams.choreography MODULE FOLDER NAME [--check]`` writes
(or checks) ``FOLDER/NAME.{dot,mmd,svg}`` for the participants MODULE defines.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import attrs
import graphviz

from statesaga._errors import InvalidParticipant
from statesaga.choreography._participant import Participant
from statesaga.diagrams.dot import FONT, _esc
from statesaga.diagrams.mermaid import _text
from statesaga.diagrams.palette import (
    BLUE,
    BLUE_FILL,
    GREEN,
    GREEN_FILL,
    GREY,
    ORANGE,
    ORANGE_FILL,
    RED,
    RED_FILL,
    TEXT,
    WHITE,
)

NodeKind = Literal["handler", "compensation", "origin", "event", "failure", "end", "external"]
EdgeKind = Literal["emits", "fails", "triggers", "compensates"]


@attrs.frozen
class FlowNode:
    """A handler, a participant's own publishing, or an event.

    Attributes:
        id: unique in the model (``payments.charge``, ``orders.*``, ``order.created``).
        kind: ``handler``, ``compensation`` (a compensating handler), ``origin``
            (what a participant publishes outside handlers), ``event``,
            ``failure`` (an event declared as a failure), ``end`` (an event no
            participant handles) or ``external`` (handled, but emitted by no
            participant drawn).
        label: the text drawn.
        participant: the participant it belongs to (``None`` for events).
    """

    id: str
    kind: NodeKind
    label: str
    participant: str | None = None


@attrs.frozen
class FlowEdge:
    """An arrow: a handler emits an event, or an event triggers a handler.

    Attributes:
        source: the node it leaves.
        dest: the node it enters.
        kind: ``emits``, ``fails`` (emits a failure event), ``triggers`` or
            ``compensates`` (triggers a compensating handler).
    """

    source: str
    dest: str
    kind: EdgeKind


@attrs.frozen
class ChoreographyModel:
    """The implied flow of a set of participants.

    Attributes:
        name: a title.
        participants: the participants' names, in the order given.
        nodes: handlers and origins (grouped by participant), then events by name.
        edges: in a fixed order (sources' order, then destinations').
    """

    name: str
    participants: tuple[str, ...]
    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]

    def node(self, id: str) -> FlowNode:
        """The node ``id``; ``KeyError`` if there is none."""
        for n in self.nodes:
            if n.id == id:
                return n
        raise KeyError(id)

    @property
    def events(self) -> tuple[FlowNode, ...]:
        """The event nodes."""
        return tuple(n for n in self.nodes if n.participant is None)

    def owned_by(self, participant: str) -> tuple[FlowNode, ...]:
        """The handler and origin nodes of ``participant``."""
        return tuple(n for n in self.nodes if n.participant == participant)

    def after(self, event: str) -> tuple[str, ...]:
        """The events that may follow ``event`` directly (through one handler)."""
        handlers = [e.dest for e in self.edges if e.source == event]
        return tuple(e.dest for h in handlers for e in self.edges if e.source == h)


def choreography_model(
    participants: Iterable[type[Participant] | Participant], name: str = "choreography"
) -> ChoreographyModel:
    """The implied flow of ``participants`` (classes or instances).

    Raises:
        InvalidParticipant: two of them share a name.
    """
    classes = [p if isinstance(p, type) else type(p) for p in participants]
    names = [c.name for c in classes]
    for n in names:
        if names.count(n) > 1:
            raise InvalidParticipant(n, "two participants have this name; names must be unique")
    emitted: set[str] = set()
    failures: set[str] = set()
    handled: set[str] = set()
    owned: list[FlowNode] = []
    edges: list[FlowEdge] = []
    for cls in classes:
        if cls.emits:
            origin = f"{cls.name}.*"
            owned.append(FlowNode(origin, "origin", "publishes on its own", cls.name))
            edges += [FlowEdge(origin, e, "emits") for e in cls.emits]
            emitted.update(cls.emits)
        for event, h in cls.handlers.items():
            hid = f"{cls.name}.{h.method}"
            kind: NodeKind = "compensation" if h.compensates else "handler"
            owned.append(FlowNode(hid, kind, h.method, cls.name))
            edges.append(FlowEdge(event, hid, "compensates" if h.compensates else "triggers"))
            edges += [FlowEdge(hid, e, "emits") for e in h.emits]
            edges += [FlowEdge(hid, e, "fails") for e in h.failures]
            emitted.update(h.may_publish)
            failures.update(h.failures)
            handled.add(event)

    def event_kind(e: str) -> NodeKind:
        if e not in emitted:
            return "external"
        if e in failures:
            return "failure"
        return "event" if e in handled else "end"

    events = [FlowNode(e, event_kind(e), e) for e in sorted(emitted | handled)]
    order = {n.id: i for i, n in enumerate([*owned, *events])}
    edges.sort(key=lambda e: (order[e.source], order[e.dest]))
    return ChoreographyModel(name, tuple(names), (*owned, *events), tuple(edges))


# -- DOT ------------------------------------------------------------------------------

_NODE_STYLE: dict[str, dict[str, str]] = {
    "handler": {"shape": "box", "style": "rounded,filled", "color": BLUE, "fillcolor": BLUE_FILL},
    "compensation": {
        "shape": "box",
        "style": "rounded,filled",
        "color": ORANGE,
        "fillcolor": ORANGE_FILL,
    },
    "origin": {"shape": "box", "style": "rounded,filled,bold", "color": TEXT, "fillcolor": WHITE},
    "event": {"shape": "ellipse", "style": "filled", "color": BLUE, "fillcolor": WHITE},
    "failure": {"shape": "ellipse", "style": "filled", "color": RED, "fillcolor": RED_FILL},
    "end": {
        "shape": "ellipse",
        "style": "filled",
        "color": GREEN,
        "fillcolor": GREEN_FILL,
        "peripheries": "2",
    },
    "external": {"shape": "ellipse", "style": "dotted", "color": GREY, "fillcolor": WHITE},
}
_EDGE_STYLE: dict[str, dict[str, str]] = {
    "emits": {"color": BLUE, "penwidth": "1.5"},
    "fails": {"color": RED, "style": "dashed", "penwidth": "1.5"},
    "triggers": {"color": BLUE, "penwidth": "1.5"},
    "compensates": {"color": ORANGE, "penwidth": "1.5"},
}


def _dot_id(id: str) -> str:
    return "n_" + hashlib.sha256(id.encode()).hexdigest()[:12]


def choreography_dot(model: ChoreographyModel) -> str:
    """The DOT source of ``model``: handlers as boxes titled by their participant,
    events as ellipses between them; deterministic."""
    g = graphviz.Digraph(name="choreography")
    g.attr(rankdir="LR", fontname=FONT, bgcolor=WHITE, labelloc="t", labeljust="l")
    g.attr(label=f"<<b>{_esc(model.name)}</b>: the flow implied by each participant's events>")
    g.attr("node", fontname=FONT, fontsize="12", fontcolor=TEXT)
    g.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.8")
    # No box per participant: it would pull each participant's handlers into one
    # rank and tangle the flow, which is what the picture is for.
    for participant in model.participants:
        for n in model.owned_by(participant):
            label = f'<<b>{_esc(participant)}</b><br/><font point-size="10">{_esc(n.label)}</font>>'
            g.node(_dot_id(n.id), label=label, **_NODE_STYLE[n.kind])
    for n in model.events:
        g.node(_dot_id(n.id), label=_esc(n.label), **_NODE_STYLE[n.kind])
    for e in model.edges:
        g.edge(_dot_id(e.source), _dot_id(e.dest), **_EDGE_STYLE[e.kind])
    source: str = g.source
    return source


# -- Mermaid --------------------------------------------------------------------------

_MERMAID_CLASS = {
    "handler": f"fill:{BLUE_FILL},stroke:{BLUE},color:{TEXT}",
    "compensation": f"fill:{ORANGE_FILL},stroke:{ORANGE},color:{TEXT}",
    "origin": f"fill:{WHITE},stroke:{TEXT},color:{TEXT},stroke-width:2px",
    "event": f"fill:{WHITE},stroke:{BLUE},color:{TEXT}",
    "failure": f"fill:{RED_FILL},stroke:{RED},color:{TEXT}",
    "end": f"fill:{GREEN_FILL},stroke:{GREEN},color:{TEXT},stroke-width:3px",
    "external": f"fill:{WHITE},stroke:{GREY},color:{GREY},stroke-dasharray:2 3",
}
_MERMAID_LINK = {
    "emits": ("-->", f"stroke:{BLUE},stroke-width:1.5px"),
    "fails": ("-.->", f"stroke:{RED},stroke-width:1.5px,stroke-dasharray:7 4"),
    "triggers": ("-->", f"stroke:{BLUE},stroke-width:1.5px"),
    "compensates": ("-->", f"stroke:{ORANGE},stroke-width:2px"),
}


def choreography_mermaid(model: ChoreographyModel) -> str:
    """The Mermaid ``flowchart`` of ``model``: each handler titled by its participant;
    node ids are ASCII (``h1``, ``e1``...), names only in labels; ends with a newline."""
    ids: dict[str, str] = {}
    for i, n in enumerate(model.nodes, 1):
        ids[n.id] = f"{'e' if n.participant is None else 'h'}{i}"
    lines = ["---", f"title: {json.dumps(model.name, ensure_ascii=False)}", "---", "flowchart LR"]
    for participant in model.participants:
        lines += [
            f'    {ids[n.id]}["<b>{_text(participant)}</b><br/><small>{_text(n.label)}</small>"]'
            for n in model.owned_by(participant)
        ]
    lines += [f'    {ids[n.id]}(["{_text(n.label)}"])' for n in model.events]
    for e in model.edges:
        lines.append(f"    {ids[e.source]} {_MERMAID_LINK[e.kind][0]} {ids[e.dest]}")
    by_kind: dict[str, list[int]] = {}
    for i, e in enumerate(model.edges):
        by_kind.setdefault(e.kind, []).append(i)
    lines += [
        f"    linkStyle {','.join(map(str, numbers))} {_MERMAID_LINK[kind][1]}"
        for kind, numbers in by_kind.items()
    ]
    classes: dict[str, list[str]] = {}
    for n in model.nodes:
        classes.setdefault(n.kind, []).append(ids[n.id])
    # Class names get a prefix: ``end`` (say) is a Mermaid keyword.
    lines += [f"    classDef k_{kind} {_MERMAID_CLASS[kind]}" for kind in classes]
    lines += [f"    class {','.join(members)} k_{kind}" for kind, members in classes.items()]
    return "\n".join(lines) + "\n"


# -- files ------------------------------------------------------------------------------

#: Marks the SVG with the digest of the DOT it was drawn from.
STAMP = "<!-- statesaga choreography dot sha256:{} -->"


def participants_in(module: str) -> list[type[Participant]]:
    """The participant classes a module defines or re-exports, by name."""
    mod = importlib.import_module(module)
    found = [
        v
        for v in vars(mod).values()
        if isinstance(v, type) and issubclass(v, Participant) and v is not Participant
    ]
    return sorted(found, key=lambda c: c.name)


def files(participants: Sequence[type[Participant]], stem: str) -> dict[str, str]:
    """The DOT and Mermaid texts of the choreography, by file name."""
    model = choreography_model(participants, stem)
    return {f"{stem}.dot": choreography_dot(model), f"{stem}.mmd": choreography_mermaid(model)}


def stale(participants: Sequence[type[Participant]], out: Path, stem: str) -> list[str]:
    """The files of ``out`` that differ from what ``write`` would write (the SVG: drawn
    from other DOT source)."""
    texts = files(participants, stem)
    found = [n for n, t in texts.items() if not (out / n).is_file() or (out / n).read_text() != t]
    svg = out / f"{stem}.svg"
    digest = hashlib.sha256(texts[f"{stem}.dot"].encode()).hexdigest()
    if not svg.is_file() or STAMP.format(digest) not in svg.read_text():
        found.append(svg.name)
    return found


def write(participants: Sequence[type[Participant]], out: Path, stem: str) -> list[Path]:
    """Write ``out/STEM.{dot,mmd,svg}``; return the files written."""
    from statesaga.diagrams.render import render_dot

    out.mkdir(parents=True, exist_ok=True)
    written = []
    texts = files(participants, stem)
    for name, text in texts.items():
        (out / name).write_text(text)
        written.append(out / name)
    dot = texts[f"{stem}.dot"]
    svg = render_dot(dot, "svg").decode()
    stamp = STAMP.format(hashlib.sha256(dot.encode()).hexdigest())
    head, sep, rest = svg.partition("<svg")
    (out / f"{stem}.svg").write_text(f"{head}{stamp}\n{sep}{rest}")
    written.append(out / f"{stem}.svg")
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
    if check:
        bad = stale(participants, Path(folder), stem)
        for name in bad:
            print(f"stale: {Path(folder) / name}", file=sys.stderr)
        return 1 if bad else 0
    for path in write(participants, Path(folder), stem):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
