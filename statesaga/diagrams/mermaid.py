"""Mermaid text of a graph model, for Markdown: a ``flowchart``, not a ``stateDiagram-v2``.

Why a flowchart: a state diagram cannot style one transition apart from
another (its ``classDef`` reaches states only), so forward, failure,
compensation, retry and "go on" transitions would all be the same black line,
told apart only by their labels. A flowchart styles each link (``linkStyle``:
colour, width, dash pattern) and draws the same thing: one node per state,
titled by its name, one link per transition, labelled with the model's words,
which the DOT renderer prints too.

Layout. Mermaid's layout (dagre) puts every link's head in a later rank than
its tail, after reversing the links that close a cycle: those it meets going
back to a state still on its depth-first walk, which starts at the first
state declared and follows each state's links in the order written. So the
chart is ``RL`` (``BT`` for top to bottom), where the compensation chain and
the links down into it (fail, in doubt, cancel, timeout) already run with the
ranks, and the walk is steered to turn round only the forward path and the
operator's retry:

- the chain's row is declared first, its first compensation first: the walk
  starts there and goes down the chain to the terminals, so the operator's
  retry, back to that compensation, closes a cycle and is turned round;
- ``completed`` comes next, and invisible links (``~~~``) from it back
  through the steps to the start marker make the walk's second path, so each
  forward link closes a cycle and is turned round, and the forward path reads
  left to right above the chain. There are two such links per pair: a step
  lines up with the median of its links on each side, and with one its
  failure links outnumbered its forward ones and the row came out as a
  staircase (measured with mermaid-cli 11.17: with one, the forward states'
  centres spread over 260 px; with two, 170).

Each row is a borderless subgraph, which keeps the two rows apart. A link
needs its ends in different ranks, so no compensation can sit exactly under
the step it undoes (they are linked): each sits one column back, under the
step before it (the first under the start marker), and the chain runs under
the forward path in the order it runs, to ``failed`` and
``compensation_failed`` at its end.

Node ids are ASCII, made from the names (``s_`` step, ``c_`` compensation,
``t_`` terminal, ``i_start``), with the real name as the label: any Python
identifier, in any script or equal to a Mermaid keyword (``end``, ``style``,
``click``, ``classDef``...), is drawn and styled like any other. In an instance
overlay each link the saga took carries its numbers in the path (``#1``), and
each state says what became of it.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Literal

from statesaga.diagrams.model import Edge, GraphModel, Node
from statesaga.diagrams.palette import (
    DARK_RED,
    EDGE_COLOUR,
    FAINT,
    MUTED,
    OUTCOME_COLOURS,
    PURPLE,
    STATE_COLOURS,
    TERMINAL_COLOURS,
    TEXT,
    WHITE,
)

#: Stroke width (px) of a state an overlay shows the saga entered, by its outcome.
_OUTCOME_WIDTH = {
    "completed": 2,
    "failed": 3,
    "compensated": 2,
    "compensation_failed": 3,
    "running": 4,
    "waiting": 4,
}


def _css(line: str, fill: str, text: str = TEXT, width: float = 1.5) -> str:
    return f"fill:{fill},stroke:{line},color:{text},stroke-width:{width:g}px"


#: ``classDef`` of each kind of state, and in an overlay of each outcome, in
#: the palette's colours (``o_end_*``: the terminal the saga reached).
CLASSES = {
    "start": _css(TEXT, TEXT),
    "step": _css(*STATE_COLOURS["step"]),
    "nocomp": _css(*STATE_COLOURS["step"]) + ",stroke-dasharray:5 3",
    "compensation": _css(*STATE_COLOURS["compensation"]),
    **{t: _css(line, fill, line, 3) for t, (line, fill) in TERMINAL_COLOURS.items()},
    "o_start": _css(PURPLE, PURPLE),
    **{
        f"o_{o}": _css(line, fill, width=_OUTCOME_WIDTH[o])
        for o, (line, fill) in OUTCOME_COLOURS.items()
    },
    **{f"o_end_{t}": _css(line, fill, line, 4) for t, (line, fill) in TERMINAL_COLOURS.items()},
    "o_none": _css(FAINT, WHITE, MUTED),
}

#: How each kind of link is drawn: the arrow written (thick, dotted or plain),
#: its colour, width (px) and dash pattern, so that forward, failure,
#: compensation, retry and "go on" differ at a glance, not only by label.
LINKS: Mapping[str, tuple[str, str, float, str | None]] = {
    "start": ("-->", TEXT, 1.5, None),
    "forward": ("==>", EDGE_COLOUR["forward"], 3, None),
    "fail": ("-.->", EDGE_COLOUR["fail"], 2, "7 4"),
    "in_doubt": ("-.->", EDGE_COLOUR["in_doubt"], 2, "3 3"),
    "timeout": ("-.->", EDGE_COLOUR["timeout"], 2, "7 4"),
    "cancel": ("-.->", EDGE_COLOUR["cancel"], 1.2, "1 4"),
    "resolve": ("-.->", EDGE_COLOUR["resolve"], 1.2, "1 4"),
    "redo": ("-.->", EDGE_COLOUR["redo"], 1.2, "1 4"),
    "compensate": ("==>", EDGE_COLOUR["compensate"], 3, None),
    "go_on": ("-.->", EDGE_COLOUR["compensation_failed"], 1.5, "2 3"),
    "retry": ("-.->", EDGE_COLOUR["retry"], 1.5, "1 3"),
    "finish": ("-->", EDGE_COLOUR["finish"], 2, None),
    "finish_failed": ("-->", DARK_RED, 2, None),
}

#: The id of the start marker (no state's id has its prefix).
START = "i_start"
#: The ids of the two rows' subgraphs (no state's id lacks a prefix).
_ROWS = ("forward", "chain")


def to_mermaid(model: GraphModel, direction: Literal["LR", "TB"] = "LR") -> str:
    """The Mermaid ``flowchart`` source of ``model``.

    Args:
        model: a definition's graph model, with or without an instance overlay.
        direction: ``LR`` draws the forward path as a row left to right, ``TB``
            as a column top to bottom; either way the compensation chain runs
            back beside it.

    Returns:
        The text, deterministic for a given model, ending with a newline. It
        starts with its front matter (the title), as Mermaid requires.
    """
    overlay = model.is_instance
    title = model.key + (f" · {model.run_summary}" if overlay else "")
    ids = node_ids(model)
    lines = [
        "---",
        f"title: {json.dumps(title, ensure_ascii=False)}",
        "---",
        f"flowchart {'RL' if direction == 'LR' else 'BT'}",
    ]

    # A retry loop carries no label: Mermaid lays a loop out after everything
    # else, and its label lands on whatever runs beside the state. The state
    # says how many attempts it has, and in an overlay the loop's numbers.
    retried = {
        e.source: _edge_label(e, True) for e in model.drawn_edges if e.kind == "retry" and e.taken
    }

    def declare(n: Node) -> str:
        return f"    {ids[n.id]}{_shape(n, overlay, retried.get(n.id))}"

    # The chain's row first, its first compensation the walk's start; then
    # ``completed``, where the turn round the forward path starts.
    forward, chain = _ROWS
    ends = [t for t in model.terminals if t.id != "completed"]
    start = f'    {START}((" "))'
    rows = [
        (chain, [*map(declare, model.compensations), *map(declare, ends)]),
        (forward, [declare(model.node("completed")), start, *map(declare, model.steps)]),
    ]
    for name, members in rows:
        lines += [f'    subgraph {name} [" "]', *members, "    end"]
    lines += [f"    style {name} fill:none,stroke:none" for name, _ in rows]

    # Each link with its style (kind, and in an overlay whether the saga took
    # it), in the order Mermaid numbers links for ``linkStyle``.
    links: list[tuple[str, tuple[str, bool | None] | None]] = []
    turn = [ids["completed"], *(ids[n.id] for n in reversed(model.steps)), START]
    links += [(f"{a} ~~~ {b}", None) for a, b in itertools.pairwise(turn) for _ in range(2)]
    started = bool(model.visited) if overlay else None
    links.append((f"{START} --> {ids[model.initial]}", ("start", started)))
    for e in model.drawn_edges:
        kind = _link_kind(e)
        label = _edge_label(e, overlay) if e.kind != "retry" else None
        text = f'|"{_text(label)}"|' if label else ""
        taken = bool(e.taken) if overlay else None
        links.append((f"{ids[e.source]} {LINKS[kind][0]}{text} {ids[e.dest]}", (kind, taken)))
    lines += [f"    {text}" for text, _ in links]
    styled: dict[tuple[str, bool | None], list[int]] = {}
    for i, (_, style) in enumerate(links):
        if style is not None:
            styled.setdefault(style, []).append(i)
    lines += [
        f"    linkStyle {','.join(map(str, numbers))} {_link_css(*style)}"
        for style, numbers in styled.items()
    ]

    classes: dict[str, list[str]] = {"o_start" if overlay else "start": [START]}
    for n in model.nodes:
        classes.setdefault(_class(n, overlay), []).append(ids[n.id])
    lines += [f"    classDef {name} {CLASSES[name]}" for name in classes]
    lines += [f"    class {','.join(members)} {name}" for name, members in classes.items()]
    return "\n".join(lines) + "\n"


def node_ids(model: GraphModel) -> dict[str, str]:
    """A Mermaid node id for each state of ``model``, by state name.

    ASCII, made from the name (accents dropped, any other character that is
    not a letter, digit or ``_`` as ``x`` and its code point in hex), after a
    prefix of its kind (``s_``, ``c_``, ``t_``) so that no id is a Mermaid
    keyword; unique (a clash gets a number).
    """
    prefix = {"step": "s_", "compensation": "c_", "terminal": "t_"}
    ids: dict[str, str] = {}
    taken = {START, *_ROWS}
    for n in model.nodes:
        folded = unicodedata.normalize("NFKD", n.id)
        slug = "".join(
            c if c.isascii() and (c.isalnum() or c == "_") else f"x{ord(c):x}"
            for c in folded
            if not unicodedata.combining(c)
        )
        id = candidate = prefix[n.kind] + slug
        k = 2
        while id in taken:
            id, k = f"{candidate}_{k}", k + 1
        taken.add(id)
        ids[n.id] = id
    return ids


def _shape(n: Node, overlay: bool, retried: str | None = None) -> str:
    """The node's shape and label: its name in bold, then what the model says
    of it, and in an overlay what became of it (``retried``: the label of its
    retry loop, if the saga took it)."""
    if n.kind == "terminal":
        return f'(["{_text(n.id)}"])'
    first, *notes = n.details
    rows = [f"<b>{_text(n.id)}</b>", _text(first), *(f"<i>{_text(s)}</i>" for s in notes)]
    if overlay and n.outcome_text:
        rows.append(f"<b>{_text(n.outcome_text)}</b>")
        if retried:
            rows.append(_text(retried))
        rows += [f"<i>{_text(s)}</i>" for s in n.error_lines]
    body = "<br/>".join(rows[:1] + [f"<small>{r}</small>" for r in rows[1:]])
    return '{{"' + body + '"}}' if n.wait is not None else '["' + body + '"]'


def _link_kind(e: Edge) -> str:
    if e.kind == "finish":
        return "finish_failed" if e.condition == "compensation_failed" else "finish"
    if e.kind == "complete":
        return "forward"
    if e.kind == "compensation_failed":
        return "go_on"
    return e.kind


def _link_css(kind: str, taken: bool | None) -> str:
    """``linkStyle`` of a link of ``kind``; ``taken`` says, in an overlay,
    whether the saga took it (``None``: no overlay)."""
    _, colour, width, dashes = LINKS[kind]
    if kind == "start" and taken:
        colour = PURPLE
    if taken is False:
        colour = FAINT
    elif taken:
        width = max(width, 2) + 1.5
    css = f"stroke:{colour},stroke-width:{width:g}px"
    if dashes:
        css += f",stroke-dasharray:{dashes}"
    return css + f",color:{MUTED if taken is False else colour}"


def _edge_label(e: Edge, overlay: bool) -> str | None:
    if overlay and e.taken:
        numbers = " ".join(f"#{n}" for n in e.taken)
        return f"{numbers} {e.label}" if e.label else numbers
    return e.label


def _class(n: Node, overlay: bool) -> str:
    if overlay:
        if n.outcome is None:
            return "o_none"
        return f"o_end_{n.id}" if n.kind == "terminal" else f"o_{n.outcome}"
    if n.kind == "terminal":
        return n.id
    if n.kind == "step" and n.compensation is None:
        return "nocomp"
    return n.kind


def _text(text: str) -> str:
    """Free text made safe inside a quoted Mermaid label: one line, and the
    characters Mermaid or HTML would read as syntax as Mermaid's entity codes
    (``#35;`` for ``#``), which it shows as the characters themselves."""
    text = " ".join(text.split())
    return re.sub(r"[\"#&<>`]", lambda m: f"#{ord(m.group())};", text)
