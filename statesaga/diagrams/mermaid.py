"""Mermaid ``stateDiagram-v2`` text of a graph model, for Markdown.

Mermaid cannot style one transition apart from another in a state diagram, so
the kinds of transition are told by their labels (``fail``, ``retry ...``,
``fail, go on``) and the kinds of state by colour classes. In an instance
overlay each transition the saga took is labelled with its numbers in the
path, ``(1)`` ``(2)`` ..., and each state with what became of it.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from statesaga.diagrams.model import Edge, GraphModel, Node
from statesaga.diagrams.palette import (
    FAINT,
    MUTED,
    OUTCOME_COLOURS,
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
}


def _css(line: str, fill: str, text: str = TEXT, width: int | None = None) -> str:
    css = f"fill:{fill},stroke:{line},color:{text}"
    return f"{css},stroke-width:{width}px" if width else css


#: ``classDef`` of each kind of state and each overlay outcome, in the palette's colours.
CLASSES = {
    "step": _css(*STATE_COLOURS["step"]),
    "nocomp": _css(*STATE_COLOURS["step"]) + ",stroke-dasharray:4 3",
    "compensation": _css(*STATE_COLOURS["compensation"]),
    **{f"t_{t}": _css(line, fill, line, 3) for t, (line, fill) in TERMINAL_COLOURS.items()},
    **{
        f"o_{o}": _css(line, fill, width=_OUTCOME_WIDTH[o])
        for o, (line, fill) in OUTCOME_COLOURS.items()
    },
    "o_reached": "stroke-width:4px",
    "o_none": _css(FAINT, WHITE, MUTED),
}


def to_mermaid(model: GraphModel, direction: Literal["LR", "TB"] = "LR") -> str:
    """The Mermaid ``stateDiagram-v2`` source of ``model``.

    Args:
        model: a definition's graph model, with or without an instance overlay.
        direction: ``LR`` (left to right) or ``TB`` (top to bottom).

    Returns:
        The text, deterministic for a given model, ending with a newline.
    """
    title = model.key
    if model.is_instance:
        title += f" · saga {model.saga_id or ''} · {model.status}"
    lines = [
        "---",
        f"title: {json.dumps(title, ensure_ascii=False)}",
        "---",
        "stateDiagram-v2",
        f"    direction {direction}",
    ]
    nodes = model.nodes
    classes = {n.id: _class(n, model.is_instance) for n in nodes}
    used = set(classes.values())
    lines += [f"    classDef {name} {style}" for name, style in CLASSES.items() if name in used]
    lines.append("")
    for n in nodes:
        lines += [f"    {n.id} : {_text(d)}" for d in _descriptions(n, model.is_instance)]
    lines.append("")
    lines.append(f"    [*] --> {model.initial}")
    for e in model.drawn_edges:
        label = _edge_label(e, model.is_instance)
        lines.append(f"    {e.source} --> {e.dest}" + (f" : {_text(label)}" if label else ""))
    for t in model.terminals:
        lines.append(f"    {t.id} --> [*]")
    lines.append("")
    lines += [f"    class {id} {name}" for id, name in classes.items()]
    return "\n".join(lines) + "\n"


def _descriptions(n: Node, overlay: bool) -> list[str]:
    out = []
    if n.kind == "step":
        assert n.index is not None
        parts = [f"step {n.index + 1}"]
        if n.transactional:
            parts.append("transactional")
        if n.timeout is not None:
            parts.append(f"timeout {n.timeout:g}s")
        if n.max_attempts > 1:
            parts.append(f"up to {n.max_attempts} attempts")
        out.append(" · ".join(parts))
        if n.compensation is None:
            out.append("no compensation")
    elif n.kind == "compensation":
        parts = [f"undoes {n.step}"]
        if n.transactional:
            parts.append("transactional")
        if n.max_attempts > 1:
            parts.append(f"up to {n.max_attempts} attempts")
        out.append(" · ".join(parts))
    if overlay and n.outcome is not None and n.kind != "terminal":
        state = {
            "completed": "completed",
            "failed": "failed",
            "compensated": "compensated" if n.kind == "compensation" else "completed, then undone",
            "compensation_failed": "compensation failed",
            "running": "running now",
        }[n.outcome]
        if n.attempts > 1:
            state += (
                f" (attempt {n.attempts})"
                if n.outcome == "running"
                else f" after {n.attempts} attempts"
            )
        out.append(f"▶ {state}" if n.outcome == "running" else state)
        if n.error and n.outcome in ("failed", "compensation_failed", "running"):
            out.append(n.error)
    return out


def _edge_label(e: Edge, overlay: bool) -> str | None:
    if overlay and e.taken:
        numbers = " ".join(f"({n})" for n in e.taken)
        return f"{numbers} {e.label}" if e.label else numbers
    return e.label


def _class(n: Node, overlay: bool) -> str:
    if overlay:
        if n.outcome is None:
            return "o_none"
        if n.kind == "terminal":
            return f"t_{n.id}"
        return f"o_{n.outcome}"
    if n.kind == "terminal":
        return f"t_{n.id}"
    if n.kind == "step" and n.compensation is None:
        return "nocomp"
    return n.kind


def _text(text: str) -> str:
    """Free text made safe for a Mermaid label: one line, and the characters
    Mermaid could read as syntax (``;`` ``#`` ``{`` ``}`` ``<`` ``>`` ``"``) as
    its entity codes, which it shows as the characters themselves."""
    text = " ".join(text.split())
    return re.sub(r"[;#{}<>\"]", lambda m: f"#{ord(m.group())};", text)
