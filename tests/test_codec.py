"""The codec's shortcuts agree with the long way (an internal module, on purpose).

``round_trip_problem`` skips decoding an attrs value whose fields are declared
plain scalars and hold exactly those types; ``frozen`` caches what it learns of
a class; ``dumps`` encodes a ``str`` without ``json.dumps``. Each must give what
the long way gives, for any value.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from statesaga import _codec as codec


@attrs.frozen
class Plain:
    name: str
    total: float
    count: int
    flag: bool


@attrs.define
class Mutable:
    name: str


scalars = st.one_of(
    st.text(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def _long_way(value: Any, type_: Any) -> bool:
    """Whether ``value`` comes back equal from its JSON as ``type_``, decoded."""
    try:
        back = codec.loads(codec.dumps(value), type_)
    except Exception:
        return False
    return bool(back == value)


@given(scalars, scalars, scalars, scalars)
def test_the_plain_fields_shortcut_agrees_with_decoding(a: Any, b: Any, c: Any, d: Any) -> None:
    value = Plain(a, b, c, d)
    try:
        codec.dumps(value)
    except (TypeError, ValueError):
        return  # does not encode: callers never ask
    assert (codec.round_trip_problem(value, Plain) is None) == _long_way(value, Plain)


@given(st.text())
def test_a_str_encodes_as_json_dumps_does(text: str) -> None:
    assert codec.dumps(text) == json.dumps(text)


def test_frozen_looks_inside_frozen_attrs_values_only() -> None:
    assert codec.frozen(Plain("a", 1.0, 1, True))
    assert not codec.frozen(Mutable("a"))
    assert codec.frozen((Plain("a", 1.0, 1, True), "x"))
    assert not codec.frozen((Plain("a", 1.0, 1, True), [1]))
    assert not codec.frozen(Plain("a", 1.0, 1, [1]))  # type: ignore[arg-type]
