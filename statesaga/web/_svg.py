"""Graphviz's SVG, made fit to put inline in a page.

The diagrams carry stored text (step names, errors). Graphviz escapes it, but
the console does not lean on that alone: the SVG is parsed and written out
again from an allowlist of the elements and attributes Graphviz draws with,
every text and attribute escaped on the way out, control characters shown as
escapes (``inert``). Scripts, event handlers, links, foreign objects and anything else
unknown are dropped. What cannot be parsed is not shown at all.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

from statesaga.web._text import inert

_SVG = "{http://www.w3.org/2000/svg}"
_XML = "{http://www.w3.org/XML/1998/namespace}"

#: The elements kept (Graphviz draws with these).
ELEMENTS = frozenset(
    {"svg", "g", "title", "path", "polygon", "polyline", "ellipse", "circle", "rect", "line"}
    | {"text", "tspan"}
)
#: Elements whose children are kept but not themselves (Graphviz's tooltip links).
UNWRAPPED = frozenset({"a"})
#: The attributes kept, on any kept element.
ATTRIBUTES = frozenset(
    {"id", "class", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry"}
    | {"d", "points", "width", "height", "viewBox", "transform", "fill", "stroke"}
    | {"stroke-width", "stroke-dasharray", "stroke-opacity", "fill-opacity", "opacity"}
    | {"font-family", "font-size", "font-weight", "font-style", "text-anchor"}
    | {"text-decoration", "xml:space"}
)


def inline_svg(svg: bytes | str) -> str | None:
    """``svg`` (a whole SVG document) as markup safe to put in an HTML page, or
    ``None`` if it is not an SVG document."""
    text = svg.decode("utf-8", "replace") if isinstance(svg, bytes) else svg
    start = text.find("<svg")
    if start < 0:
        return None
    try:
        root = ET.fromstring(text[start:])
    except ET.ParseError:
        return None
    if _name(root.tag) != "svg":
        return None
    out: list[str] = []
    _write(root, out)
    return "".join(out)


def _name(tag: str) -> str:
    if tag.startswith(_SVG):
        return tag[len(_SVG) :]
    if tag.startswith(_XML):
        return "xml:" + tag[len(_XML) :]
    return "" if tag.startswith("{") else tag  # another namespace: unknown


def _write(element: ET.Element, out: list[str]) -> None:
    name = _name(element.tag) if isinstance(element.tag, str) else ""
    if name in ELEMENTS:
        attrs = "".join(
            f' {key}="{html.escape(inert(value), quote=True)}"'
            for key, value in ((_name(k), v) for k, v in element.attrib.items())
            if key in ATTRIBUTES
        )
        out.append(f"<{name}{attrs}>")
        if element.text:
            out.append(html.escape(inert(element.text), quote=False))
        for child in element:
            _write(child, out)
        out.append(f"</{name}>")
    elif name in UNWRAPPED:
        if element.text and element.text.strip():
            out.append(html.escape(inert(element.text), quote=False))
        for child in element:
            _write(child, out)
    if element.tail and element.tail.strip():
        out.append(html.escape(inert(element.tail), quote=False))
