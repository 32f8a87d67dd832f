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
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
import graphviz
from sqlalchemy.engine import Engine

from statesaga._errors import InvalidParticipant
from statesaga.choreography._participant import Participant
from statesaga.diagrams.dot import FONT, Direction, _esc
from statesaga.diagrams.mermaid import _text
from statesaga.diagrams.palette import (
    BLUE,
    BLUE_FILL,
    FAINT,
    GREEN,
    GREEN_FILL,
    GREY,
    MUTED,
    ORANGE,
    ORANGE_FILL,
    PURPLE,
    RED,
    RED_FILL,
    TEXT,
    WHITE,
)
from statesaga.store._outbox import InboxRow, OutboxRow, OutboxStore

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine
    from statesaga.diagrams.render import Format, Renderer

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
        seen: overlay only: the numbers of the key's events it published or
            handled (a handler, an origin) or that carry its name (an event).
        dead: overlay only: the numbers of the events a handler dead-lettered,
            or of an event's occurrences that were dead-lettered somewhere.
        pending: overlay only: an event's occurrences not published yet.
    """

    id: str
    kind: NodeKind
    label: str
    participant: str | None = None
    seen: tuple[int, ...] = ()
    dead: tuple[int, ...] = ()
    pending: tuple[int, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        """Overlay only: what a drawing says under the node's label."""
        lines = []
        done = [n for n in self.seen if n not in self.dead and n not in self.pending]
        if self.participant is None:
            if done:
                lines.append(_numbers(done))
            if self.pending:
                lines.append(f"{_numbers(self.pending)} not published yet")
            if self.dead:
                lines.append(f"{_numbers(self.dead)} dead-lettered")
        else:
            if done:
                lines.append(
                    f"{'published' if self.kind == 'origin' else 'handled'} {_numbers(done)}"
                )
            if self.dead:
                lines.append(f"dead-lettered {_numbers(self.dead)}")
        return tuple(lines)


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


@attrs.frozen
class FlowEdge:
    """An arrow: a handler emits an event, or an event triggers a handler.

    Attributes:
        source: the node it leaves.
        dest: the node it enters.
        kind: ``emits``, ``fails`` (emits a failure event), ``triggers`` or
            ``compensates`` (triggers a compensating handler).
        taken: overlay only: the numbers of the key's events that went this way
            (published by the handler, or processed by it).
        dead: overlay only: the numbers of the events that went this way and
            were dead-lettered by the handler.
    """

    source: str
    dest: str
    kind: EdgeKind
    taken: tuple[int, ...] = ()
    dead: tuple[int, ...] = ()

    @property
    def label(self) -> str | None:
        """Overlay only: the numbers drawn on the edge (``None``: none)."""
        parts = []
        if self.taken:
            parts.append(_numbers(self.taken))
        if self.dead:
            parts.append(f"{_numbers(self.dead)} dead-lettered")
        return "; ".join(parts) or None


@attrs.frozen
class TrailEvent:
    """One event of a key, in an overlay.

    Attributes:
        number: its place among the key's events, from 1, in the order written.
        id: the event's id.
        name: the event's name.
        source: the participant that published it, if one did.
        emitter: the node that published it (a handler or an origin), if the
            drawing has it.
        published: whether the relay has handed it to the broker.
        processed: the handler nodes that processed it, in the order they did.
        dead: the handler nodes that dead-lettered it.
        waiting: the handler nodes that handle it and have done neither yet.
    """

    number: int
    id: str
    name: str
    source: str | None
    emitter: str | None
    published: bool
    processed: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()


@attrs.frozen
class ChoreographyModel:
    """The implied flow of a set of participants.

    Attributes:
        name: a title.
        participants: the participants' names, in the order given.
        nodes: handlers and origins (grouped by participant), then events by name.
        edges: in a fixed order (sources' order, then destinations').
        key: overlay only: the business key whose events are laid over the flow.
        trail: overlay only: that key's events, in the order they were written.
    """

    name: str
    participants: tuple[str, ...]
    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]
    key: str | None = None
    trail: tuple[TrailEvent, ...] | None = None

    @property
    def is_instance(self) -> bool:
        """Whether one key's events are laid over the flow."""
        return self.trail is not None

    @property
    def summary(self) -> str | None:
        """Overlay only: ``key K: N events, P published, H handled, D dead-lettered``."""
        if self.trail is None:
            return None
        t = self.trail
        parts = [
            f"{len(t)} events",
            f"{sum(e.published for e in t)} published",
            f"{sum(len(e.processed) for e in t)} handled",
        ]
        if dead := sum(len(e.dead) for e in t):
            parts.append(f"{dead} dead-lettered")
        if waiting := sum(len(e.waiting) for e in t):
            parts.append(f"{waiting} waiting")
        return f"key {self.key}: {', '.join(parts)}"

    def with_trail(
        self, events: Sequence[OutboxRow], handled: Sequence[InboxRow], key: str | None = None
    ) -> ChoreographyModel:
        """This flow with one key's events laid over it.

        Args:
            events: the key's outbox rows (``OutboxStore.events(key=...)``).
            handled: the inbox rows of those events (``OutboxStore.handled``).
            key: the key, for the title.

        Returns:
            A new model whose ``trail`` lists the events in the order they were
            written, and whose nodes and edges carry the numbers of the events
            that went through them. A handler publishing an event is found from
            the event's source and cause; a consumer or event the drawing does
            not have is left out of it.
        """
        part_of = {n.id: n.participant for n in self.nodes}
        triggered: dict[str, list[str]] = {}
        may_emit: dict[tuple[str | None, str], list[str]] = {}
        for e in self.edges:
            if e.kind in ("triggers", "compensates"):
                triggered.setdefault(e.source, []).append(e.dest)
            else:
                may_emit.setdefault((part_of[e.source], e.dest), []).append(e.source)
        rows = sorted(events, key=lambda r: r.position)
        names = {r.event_id: r.name for r in rows}
        by_event: dict[str, list[InboxRow]] = {}
        for h in handled:
            by_event.setdefault(h.event_id, []).append(h)
        trail = []
        for number, r in enumerate(rows, 1):
            handlers = triggered.get(r.name, [])
            done = {h.consumer for h in by_event.get(r.event_id, ()) if not h.dead}
            dead = {h.consumer for h in by_event.get(r.event_id, ()) if h.dead}
            order = [h.consumer for h in by_event.get(r.event_id, ()) if not h.dead]
            trail.append(
                TrailEvent(
                    number,
                    r.event_id,
                    r.name,
                    r.source,
                    self._emitter(r, names.get(r.cause or ""), may_emit, triggered),
                    r.published_at is not None,
                    tuple(h for c in order for h in handlers if part_of[h] == c and c in done),
                    tuple(h for h in handlers if part_of[h] in dead),
                    tuple(h for h in handlers if part_of[h] not in done | dead),
                )
            )

        def node(n: FlowNode) -> FlowNode:
            if n.participant is None:
                mine = [t for t in trail if t.name == n.id]
                return attrs.evolve(
                    n,
                    seen=tuple(t.number for t in mine),
                    dead=tuple(t.number for t in mine if t.dead),
                    pending=tuple(t.number for t in mine if not t.published),
                )
            # A handler's numbers are the events it handled (those it published are
            # on its edges); an origin's, the events it published.
            through = (
                (lambda t: n.id == t.emitter)
                if n.kind == "origin"
                else (lambda t: n.id in (*t.processed, *t.dead))
            )
            return attrs.evolve(
                n,
                seen=tuple(t.number for t in trail if through(t)),
                dead=tuple(t.number for t in trail if n.id in t.dead),
            )

        def edge(e: FlowEdge) -> FlowEdge:
            if e.kind in ("triggers", "compensates"):
                mine = [t for t in trail if t.name == e.source]
                return attrs.evolve(
                    e,
                    taken=tuple(t.number for t in mine if e.dest in t.processed),
                    dead=tuple(t.number for t in mine if e.dest in t.dead),
                )
            return attrs.evolve(
                e,
                taken=tuple(t.number for t in trail if t.name == e.dest and t.emitter == e.source),
            )

        return attrs.evolve(
            self,
            nodes=tuple(node(n) for n in self.nodes),
            edges=tuple(edge(e) for e in self.edges),
            key=key,
            trail=tuple(trail),
        )

    def _emitter(
        self,
        row: OutboxRow,
        cause: str | None,
        may_emit: dict[tuple[str | None, str], list[str]],
        triggered: dict[str, list[str]],
    ) -> str | None:
        """The node that published ``row``: its source's origin if no event caused
        it, else the source's handler of the cause that may emit it."""
        if row.source is None:
            return None
        if row.cause is None:
            origin = f"{row.source}.*"
            return origin if any(n.id == origin for n in self.nodes) else None
        candidates = may_emit.get((row.source, row.name), [])
        if cause is not None:
            candidates = [h for h in candidates if h in triggered.get(cause, [])]
        return candidates[0] if len(candidates) == 1 else None

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


def choreography_dot(model: ChoreographyModel, direction: Direction = "LR") -> str:
    """The DOT source of ``model``: handlers as boxes titled by their participant,
    events as ellipses between them; with an overlay, the key's events numbered
    on the edges they took, the rest greyed out; deterministic."""
    g = graphviz.Digraph(name="choreography")
    g.attr(rankdir=direction, fontname=FONT, bgcolor=WHITE, labelloc="t", labeljust="l")
    title = f"<b>{_esc(model.name)}</b>: the flow implied by each participant's events"
    if model.summary is not None:
        title += f'<br/><font color="{PURPLE}">{_esc(model.summary)}</font>'
    g.attr(label=f"<{title}>")
    g.attr("node", fontname=FONT, fontsize="12", fontcolor=TEXT)
    g.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.8")
    # No box per participant: it would pull each participant's handlers into one
    # rank and tangle the flow, which is what the picture is for.
    for participant in model.participants:
        for n in model.owned_by(participant):
            label = f'<b>{_esc(participant)}</b><br/><font point-size="10">{_esc(n.label)}</font>'
            g.node(_dot_id(n.id), label=f"<{label}{_dot_notes(n)}>", **_dot_node(model, n))
    for n in model.events:
        g.node(_dot_id(n.id), label=f"<{_esc(n.label)}{_dot_notes(n)}>", **_dot_node(model, n))
    for e in model.edges:
        g.edge(_dot_id(e.source), _dot_id(e.dest), **_dot_edge(model, e))
    source: str = g.source
    return source


def _dot_notes(n: FlowNode) -> str:
    return "".join(f'<br/><font point-size="9" color="{PURPLE}">{_esc(t)}</font>' for t in n.notes)


def _dot_node(model: ChoreographyModel, n: FlowNode) -> dict[str, str]:
    style = dict(_NODE_STYLE[n.kind])
    if not model.is_instance:
        return style
    if not n.seen:
        return {**style, "color": FAINT, "fillcolor": WHITE, "fontcolor": MUTED}
    if n.dead:
        return {**style, "color": RED, "penwidth": "2.5"}
    return {**style, "penwidth": "2"}


def _dot_edge(model: ChoreographyModel, e: FlowEdge) -> dict[str, str]:
    style = dict(_EDGE_STYLE[e.kind])
    if not model.is_instance:
        return style
    if e.dead:
        style.update(color=RED, style="dashed", penwidth="2.5")
    elif e.taken:
        style.update(penwidth="2.5")
    else:
        return {**style, "color": FAINT, "penwidth": "1"}
    assert e.label is not None
    return {**style, "label": _esc(e.label), "fontcolor": PURPLE}


# -- Mermaid --------------------------------------------------------------------------

_MERMAID_CLASS = {
    "handler": f"fill:{BLUE_FILL},stroke:{BLUE},color:{TEXT}",
    "compensation": f"fill:{ORANGE_FILL},stroke:{ORANGE},color:{TEXT}",
    "origin": f"fill:{WHITE},stroke:{TEXT},color:{TEXT},stroke-width:2px",
    "event": f"fill:{WHITE},stroke:{BLUE},color:{TEXT}",
    "failure": f"fill:{RED_FILL},stroke:{RED},color:{TEXT}",
    "end": f"fill:{GREEN_FILL},stroke:{GREEN},color:{TEXT},stroke-width:3px",
    "external": f"fill:{WHITE},stroke:{GREY},color:{GREY},stroke-dasharray:2 3",
    "unseen": f"fill:{WHITE},stroke:{FAINT},color:{MUTED}",
    "dead": f"fill:{RED_FILL},stroke:{RED},color:{TEXT},stroke-width:3px",
}
_MERMAID_LINK = {
    "emits": ("-->", f"stroke:{BLUE},stroke-width:1.5px"),
    "fails": ("-.->", f"stroke:{RED},stroke-width:1.5px,stroke-dasharray:7 4"),
    "triggers": ("-->", f"stroke:{BLUE},stroke-width:1.5px"),
    "compensates": ("-->", f"stroke:{ORANGE},stroke-width:2px"),
}


def choreography_mermaid(model: ChoreographyModel, direction: Direction = "LR") -> str:
    """The Mermaid ``flowchart`` of ``model``: each handler titled by its participant;
    with an overlay, the key's events numbered on the edges they took, the rest
    greyed out; node ids are ASCII (``h1``, ``e1``...), names only in labels;
    ends with a newline."""
    ids: dict[str, str] = {}
    for i, n in enumerate(model.nodes, 1):
        ids[n.id] = f"{'e' if n.participant is None else 'h'}{i}"
    title = model.name if model.summary is None else f"{model.name}, {model.summary}"
    lines = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "---"]
    lines.append(f"flowchart {direction}")

    def notes(n: FlowNode) -> str:
        return "".join(f"<br/><i>{_text(t)}</i>" for t in n.notes)

    for participant in model.participants:
        lines += [
            f'    {ids[n.id]}["<b>{_text(participant)}</b><br/><small>{_text(n.label)}</small>'
            f'{notes(n)}"]'
            for n in model.owned_by(participant)
        ]
    lines += [f'    {ids[n.id]}(["{_text(n.label)}{notes(n)}"])' for n in model.events]
    by_style: dict[str, list[int]] = {}
    for i, e in enumerate(model.edges):
        arrow = _MERMAID_LINK[e.kind][0]
        label = f'|"{_text(e.label)}"|' if e.label else ""
        lines.append(f"    {ids[e.source]} {arrow}{label} {ids[e.dest]}")
        by_style.setdefault(_mermaid_link_style(model, e), []).append(i)
    lines += [
        f"    linkStyle {','.join(map(str, numbers))} {style}"
        for style, numbers in by_style.items()
    ]
    classes: dict[str, list[str]] = {}
    for n in model.nodes:
        classes.setdefault(_mermaid_class(model, n), []).append(ids[n.id])
    # Class names get a prefix: ``end`` (say) is a Mermaid keyword.
    lines += [f"    classDef k_{kind} {_MERMAID_CLASS[kind]}" for kind in classes]
    lines += [f"    class {','.join(members)} k_{kind}" for kind, members in classes.items()]
    return "\n".join(lines) + "\n"


def _mermaid_class(model: ChoreographyModel, n: FlowNode) -> str:
    if not model.is_instance:
        return n.kind
    if not n.seen:
        return "unseen"
    return "dead" if n.dead else n.kind


def _mermaid_link_style(model: ChoreographyModel, e: FlowEdge) -> str:
    style = _MERMAID_LINK[e.kind][1]
    if not model.is_instance:
        return style
    if e.dead:
        return f"stroke:{RED},stroke-width:3px,stroke-dasharray:7 4"
    if e.taken:
        return style.replace("1.5px", "3px").replace("2px", "3px")
    return f"stroke:{FAINT},stroke-width:1px"


# -- one key's events, from the database --------------------------------------------------


def trail_model(
    db: SagaEngine | Engine | str,
    participants: Iterable[type[Participant] | Participant],
    key: str,
    name: str = "choreography",
) -> ChoreographyModel:
    """The flow of ``participants`` with the events of ``key`` laid over it, as the
    outbox and the inboxes of statesaga's database hold them (read only).

    Args:
        db: statesaga's database: a ``SagaEngine``, an SQLAlchemy ``Engine`` or a URL.
        participants: the participants to draw.
        key: the business key (an order id, say).
        name: a title.
    """
    from statesaga.choreography._inbox import engine_of

    engine = engine_of(db)
    store = OutboxStore(engine)
    try:
        events = store.events(key=key)
        handled = store.handled([e.event_id for e in events])
    finally:
        if isinstance(db, str):
            engine.dispose()
    return choreography_model(participants, name).with_trail(events, handled, key)


def render_choreography(
    model: ChoreographyModel,
    format: Format = "svg",
    *,
    direction: Direction = "LR",
    renderer: Renderer = "auto",
) -> bytes:
    """The drawing of ``model`` in ``format`` (``dot``, ``mermaid``, ``svg``, ``png``),
    as bytes, through the same Graphviz rendering as the sagas' drawings.

    Raises:
        RenderError: an image format was asked for and no Graphviz works.
    """
    from statesaga.diagrams.render import render_dot

    if format == "mermaid":
        return choreography_mermaid(model, direction).encode()
    dot = choreography_dot(model, direction)
    if format == "dot":
        return dot.encode()
    return render_dot(dot, format, renderer)


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
    from statesaga.diagrams.render import render_dot

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
