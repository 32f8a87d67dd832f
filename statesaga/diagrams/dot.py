"""DOT source of a graph model, built with the ``graphviz`` package (no binary needed).

The visual language:

- steps are blue rounded boxes in one row (left to right) or column (top to
  bottom), joined by thick blue arrows: the forward path;
- compensations are orange rounded boxes in a second row, each under the step
  it undoes, joined by thick orange arrows running back: the compensation chain;
- a step's final failure is a dashed red arrow down into the chain; a retry is
  a dotted grey loop; a step without compensation says so in grey;
- terminals are double ellipses: green ``completed``, red ``failed``, dark red
  ``compensation_failed``;
- in an instance overlay, what the saga did is coloured and what it did not is
  greyed out; each transition it took carries its number in the path;
- a saga of more than ``WRAP_AFTER`` steps wraps: its row is cut into bands,
  each band's steps over their compensations, one band under the other.

The colours are the ``palette``'s, which Mermaid uses too.
"""

from __future__ import annotations

import html
import itertools
import math
import textwrap
from typing import Literal

import graphviz

from statesaga.diagrams.model import Edge, GraphModel, Node
from statesaga.diagrams.palette import (
    BLUE,
    DARK_RED,
    EDGE_COLOUR,
    FAINT,
    GREY,
    MUTED,
    ORANGE,
    OUTCOME_COLOURS,
    PURPLE,
    RED,
    STATE_COLOURS,
    TERMINAL_COLOURS,
    TEXT,
    WHITE,
    status_colour,
)

Direction = Literal["LR", "TB"]

FONT = "Helvetica,Arial,sans-serif"
START = "__start__"


def to_dot(model: GraphModel, direction: Direction = "LR") -> str:
    """The DOT source of ``model``.

    Args:
        model: a definition's graph model, with or without an instance overlay.
        direction: ``LR`` draws the forward path as a row, ``TB`` as a column.

    Returns:
        The source text, deterministic for a given model.
    """
    source: str = build_digraph(model, direction).source
    return source


def build_digraph(model: GraphModel, direction: Direction = "LR") -> graphviz.Digraph:
    """The model as a ``graphviz.Digraph`` (to render or extend it)."""
    g = graphviz.Digraph(name=_id(model.key))
    # A long saga wraps into bands (see ``_bands``), laid out across ``direction``.
    width = _band_width(len(model.steps) + 1)
    banded = width <= len(model.steps)
    g.attr(
        rankdir=direction if not banded else _ACROSS[direction],
        newrank="true",
        nodesep="0.35",
        ranksep="0.55",
        bgcolor=WHITE,
        fontname=FONT,
        labelloc="t",
        labeljust="l",
        label=_title(model),
        pad="0.3",
    )
    g.attr("node", fontname=FONT, fontsize="12", fontcolor=TEXT, margin="0.15,0.06")
    g.attr("edge", fontname=FONT, fontsize="10", arrowsize="0.8")

    overlay = model.is_instance
    g.node(
        START,
        label="",
        shape="circle",
        width="0.22",
        fixedsize="true",
        style="filled",
        fillcolor=TEXT if not overlay else PURPLE,
        color=TEXT if not overlay else PURPLE,
    )
    for n in model.steps:
        g.node(n.id, **_node_attrs(n, overlay))
    g.node("completed", **_node_attrs(model.node("completed"), overlay))
    for n in model.compensations:
        g.node(n.id, **_node_attrs(n, overlay))
    failure_terminals = [n.id for n in model.terminals if n.id != "completed"]
    for t in failure_terminals:
        g.node(t, **_node_attrs(model.node(t), overlay))

    # Ranks: a compensation sits under the step after the one it undoes, which is
    # where a failure starts the chain, so a linear saga's failure edges drop
    # straight down; the failure terminals sit under the first step, where the
    # chain ends.
    columns: list[list[str]] = [[n.id] for n in model.steps] + [["completed"]]
    columns[0] += failure_terminals
    for n in model.steps:
        if n.compensation:
            assert n.index is not None
            columns[n.index + 1].append(n.compensation)
    ranks = columns if not banded else _bands(columns, width)
    for rank in ranks:
        with g.subgraph() as r:
            r.attr(rank="same")
            for id in rank:
                r.node(id)
            # Invisible flat edges order a rank: the forward row (or column)
            # first, then the compensation chain, then the failure terminals.
            for upper, lower in itertools.pairwise(rank):
                r.edge(upper, lower, style="invis")
    if banded:
        # Each compensation under its column's step; each rank under the last.
        for column in columns:
            for under in column[1:]:
                g.edge(column[0], under, style="invis", weight="5")
        for upper_rank, lower_rank in itertools.pairwise(ranks):
            g.edge(upper_rank[0], lower_rank[0], style="invis", weight="0")
        # Each band's columns under the band above's, the first step under the
        # first: bands read like lines of text.
        heads = [
            [column[0] for column in columns[i : i + width]] for i in range(0, len(columns), width)
        ]
        for upper_band, lower_band in itertools.pairwise(heads):
            for upper, lower in zip(upper_band, lower_band, strict=False):
                g.edge(upper, lower, style="invis", weight="10")

    g.edge(
        START,
        model.initial,
        color=TEXT if not overlay else PURPLE,
        penwidth="1.5" if not overlay else "3",
        weight="10",
    )
    place = {id: (i, j) for i, rank in enumerate(ranks) for j, id in enumerate(rank)}
    # Retry loops go on the side away from the failure edges between the rows.
    outside = {
        "step": "n" if direction == "LR" else "w",
        "compensation": "s" if direction == "LR" else "e",
    }
    for e in model.drawn_edges:
        flat = banded and e.source != e.dest and place[e.source][0] == place[e.dest][0]
        attrs = _edge_attrs(e, overlay, banded=banded, flat=flat)
        if banded and not flat and e.kind in ("forward", "complete", "compensate"):
            attrs["weight"] = "0"  # a turn into the next band must not pull it along
        if e.kind == "retry":
            port = outside[model.node(e.source).kind]
            attrs.update(tailport=port, headport=port)
        if banded and place[e.source] > place[e.dest]:
            # Against the bands' order (the compensation chain runs back): drawn
            # as declared, laid out as if it ran along, so it reorders nothing.
            attrs["dir"] = "back"
            g.edge(e.dest, e.source, **attrs)
        else:
            g.edge(e.source, e.dest, **attrs)
    return g


#: A saga with more steps than this wraps into bands.
WRAP_AFTER = 8


def _band_width(columns: int) -> int:
    """How many of ``columns`` one band holds: all of them for a saga of up to
    ``WRAP_AFTER`` steps; else about twice as many columns as there are bands (a
    column is about as wide as a band is high, so the drawing is about twice as
    wide as high), shared out evenly."""
    if columns <= WRAP_AFTER + 1:
        return columns
    bands = -(-columns // math.ceil(math.sqrt(2 * columns)))
    return -(-columns // bands)


#: The direction bands are laid out in, across the drawing's own.
_ACROSS: dict[Direction, Direction] = {"LR": "TB", "TB": "LR"}


def _bands(columns: list[list[str]], width: int) -> list[list[str]]:
    """The ranks of a long saga wrapped into bands of ``width`` columns.

    A row of many steps is a strip no screen shows whole: it is cut into bands
    of ``width`` columns, each a rank of steps over a rank of what sits under
    them (compensations; in the first band, the failure terminals first). The
    ranks run across the drawing's direction, one under (or beside) the other,
    so the forward path reads like lines of text.
    """
    ranks: list[list[str]] = []
    for start in range(0, len(columns), width):
        band = columns[start : start + width]
        ranks.append([START] * (start == 0) + [column[0] for column in band])
        below = [id for column in band for id in column[1:]]
        if below:
            ranks.append(below)
    return ranks


def _id(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _title(model: GraphModel) -> str:
    # Graphviz rejects an empty <font> element: add the deadline only if there is one.
    deadline = (
        f'<font color="{GREY}">   deadline {model.deadline:g}s</font>'
        if model.deadline is not None
        else ""
    )
    rows = [
        f'<tr><td align="left"><font point-size="15"><b>{_esc(model.key)}</b></font>'
        f"{deadline}</td></tr>"
    ]
    if model.is_instance:
        colour = status_colour(model.status)
        saga = _esc(model.saga_id) if model.saga_id else "one saga"
        rows.append(
            f'<tr><td align="left">saga <b>{saga}</b>: '
            f'<font color="{colour}"><b>{_esc(model.status or "")}</b></font>'
            f" after {len(model.path)} transitions</td></tr>"
        )
        if model.error:
            error = _wrap(model.error, 90)
            rows.append(f'<tr><td align="left"><font color="{RED}">{error}</font></td></tr>')
    for table in _legend(model.is_instance).split("</table>")[:-1]:
        rows.append(f'<tr><td align="left">{table}</table></td></tr>')
    return f'<<table border="0" cellspacing="2" cellpadding="0">{"".join(rows)}</table>>'


def _legend(overlay: bool) -> str:
    """A key of the visual language: the kinds of transition, and in an overlay
    the colours of what became of each state."""

    def line(glyph: str, colour: str, text: str) -> str:
        return f'<td align="left"><font color="{colour}"><b>{glyph}</b></font> {text}    </td>'

    def swatch(line_colour: str, fill: str, text: str) -> str:
        return (
            f'<td border="1" color="{line_colour}" bgcolor="{fill}" width="14" height="10"></td>'
            f'<td align="left"> {text}    </td>'
        )

    edges = [
        line("━━▶", BLUE, "forward"),
        line("╌╌▶", RED, "step failed"),
        line("━━▶", ORANGE, "compensation"),
        line("╌╌▶", DARK_RED, "compensation failed, go on"),
        line("┈┈▶", GREY, "retry"),
    ]
    rows = ["<tr>" + "".join(edges) + "</tr>"]
    if overlay:
        cells = [
            swatch(*OUTCOME_COLOURS["completed"], "completed"),
            swatch(*OUTCOME_COLOURS["compensated"], "compensated"),
            swatch(*OUTCOME_COLOURS["failed"], "failed"),
            swatch(*OUTCOME_COLOURS["running"], "running"),
            swatch(FAINT, WHITE, "not reached"),
            f'<td bgcolor="{GREY}"><font color="{WHITE}" point-size="10"><b> n </b></font></td>'
            '<td align="left"> n-th transition taken</td>',
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(
        f'<table border="0" cellspacing="2" cellpadding="1">{row}</table>' for row in rows
    )


def _wrap(text: str, width: int) -> str:
    lines = textwrap.wrap(text, width, max_lines=3, placeholder=" …") or [""]
    return "<br/>".join(_esc(line) for line in lines)


def _node_attrs(n: Node, overlay: bool) -> dict[str, str]:
    if n.kind == "terminal":
        line, fill = TERMINAL_COLOURS[n.id]
        attrs = {
            "shape": "ellipse",
            "peripheries": "2",
            "style": "filled",
            "color": line,
            "fillcolor": fill,
            "fontcolor": line,
            "label": f"<<b>{_esc(n.id)}</b>>",
        }
        if overlay:
            if n.outcome == "reached":
                attrs["penwidth"] = "3"
            else:
                attrs.update(color=FAINT, fillcolor=WHITE, fontcolor=FAINT)
        return attrs

    step_kind = n.kind == "step"
    line, fill = STATE_COLOURS[n.kind]
    first, *notes = n.details
    sub = [_esc(first), *(f"<i>{_esc(note)}</i>" for note in notes)]

    fontcolor = TEXT
    sub_colour = GREY
    penwidth = "1.5"
    style = "rounded,filled"
    if overlay:
        if n.outcome is None:
            line, fill, fontcolor, sub_colour = FAINT, WHITE, MUTED, MUTED
        else:
            line, fill = OUTCOME_COLOURS[n.outcome]
            penwidth = "2.5"
            state = _esc(n.outcome_text or "")
            sub.append(f'<font color="{line}"><b>{state}</b></font>')
            if n.error_lines:
                error = "<br/>".join(_esc(x) for x in n.error_lines)
                sub.append(f'<font color="{RED}">{error}</font>')
            if n.outcome in ("failed", "running", "waiting"):
                penwidth = "3.5"
    elif step_kind and n.compensation is None:
        style = "rounded,filled,dashed"

    rows = [f"<tr><td><b>{_esc(n.id)}</b></td></tr>"]
    rows += [f'<tr><td><font point-size="9" color="{sub_colour}">{s}</font></td></tr>' for s in sub]
    return {
        "shape": "hexagon" if n.wait is not None else "box",
        "style": style,
        "color": line,
        "fillcolor": fill,
        "fontcolor": fontcolor,
        "penwidth": penwidth,
        "label": f'<<table border="0" cellspacing="0" cellpadding="1">{"".join(rows)}</table>>',
    }


def _edge_attrs(
    e: Edge, overlay: bool, *, banded: bool = False, flat: bool = False
) -> dict[str, str]:
    colour = EDGE_COLOUR[e.kind]
    if e.kind == "finish" and e.condition == "compensation_failed":
        colour = DARK_RED
    attrs: dict[str, str] = {"color": colour, "fontcolor": colour}
    if e.kind in ("forward", "complete", "compensate"):
        attrs.update(penwidth="2", weight="10")
    elif e.kind == "retry":
        attrs.update(style="dotted", penwidth="1.2")
    elif e.kind in ("cancel", "resolve", "redo"):  # the operator's, drawn apart
        attrs.update(style="dotted", penwidth="1.2", constraint="false")
    elif e.kind in ("fail", "in_doubt", "timeout", "compensation_failed"):
        attrs.update(style="dashed", penwidth="1.2", constraint="false")
    else:  # finish
        attrs.update(penwidth="1.5", constraint="false")
    # A step's failure drops between the rows as a flat edge, whose label
    # Graphviz centres on the line itself: an external label sits beside it.
    # So do the labels of a wrapped saga (``banded``), whose edges between
    # bands would each take a column of their own; an edge within a band
    # (``flat``) must not pull on the ranks either.
    key = "xlabel" if e.kind == "fail" or banded else "label"
    if flat:
        attrs.pop("constraint", None)
    if e.label:
        attrs[key] = f" {e.label} "
    if overlay:
        if e.taken:
            attrs["penwidth"] = "3" if e.kind != "retry" else "2"
            attrs[key] = _badges(e.taken, colour, e.label)
        else:
            attrs.update(color=FAINT, fontcolor=FAINT)
    return attrs


def _badges(numbers: tuple[int, ...], colour: str, label: str | None) -> str:
    """Numbers in filled boxes (the path positions), then the edge's own label."""
    cells = "".join(
        f'<td bgcolor="{colour}"><font color="{WHITE}" point-size="10"><b> {n} </b></font></td>'
        for n in numbers
    )
    if label:
        cells += f"<td>{_esc(label)} </td>"
    return (
        '<<table border="0" cellborder="0" cellspacing="2" cellpadding="1">'
        f"<tr>{cells}</tr></table>>"
    )
