"""The choreography's drawings: DOT (and through it SVG and PNG) and Mermaid.

Both read a ``ChoreographyModel`` and nothing else, in the sagas' visual
language (the ``palette``): blue the forward flow, red dashed a failure event,
orange a compensating handler, green an event that ends the flow, grey dotted
an event handled but emitted by no participant drawn; with an overlay, the
key's events numbered on the edges they took and the rest greyed out.
"""

from __future__ import annotations

import hashlib
import json

import graphviz

from statesaga.diagrams._choreography_model import ChoreographyModel, FlowEdge, FlowNode
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
from statesaga.diagrams.render import Format, Renderer, render_dot

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
    if format == "mermaid":
        return choreography_mermaid(model, direction).encode()
    dot = choreography_dot(model, direction)
    if format == "dot":
        return dot.encode()
    return render_dot(dot, format, renderer)
