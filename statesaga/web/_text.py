"""Stored text as the console shows it: inert.

Jinja escapes every value put in a page (autoescape), so no stored string is
read as markup. ``inert`` does the rest: control characters, escape sequences,
bidirectional overrides, zero-width and other invisible format characters are
shown as escapes (``\\x1b``, ``\\u202e``), so a stored value can neither hide
what it says nor pass for something else. Line breaks and tabs stay: errors
are often tracebacks, shown in ``<pre>``.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from statesaga import _codec as codec

#: Unicode categories shown as escapes: controls, formats (bidi, zero-width),
#: surrogates, private use, unassigned, line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEPT = frozenset("\n\t")


def inert(value: object) -> str:
    """``value`` as text that shows what it holds: invisible characters as escapes."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(_escape(c) if _hidden(c) else c for c in text)


def _hidden(c: str) -> bool:
    return c not in _KEPT and unicodedata.category(c) in _HIDDEN


def _escape(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def pretty_json(text: str | None) -> str:
    """Stored JSON text (an input), indented for reading; other text as it is."""
    if text is None:
        return ""
    try:
        value = json.loads(text)
    except ValueError:
        return inert(text)
    return inert(json.dumps(value, indent=2, ensure_ascii=False))


def pretty_value(value: Any) -> str:
    """A decoded value (a step's result) as indented JSON, as it is stored."""
    try:
        return pretty_json(codec.dumps(value))
    except Exception:  # a value the codec cannot write: show what Python says of it
        return inert(repr(value))
