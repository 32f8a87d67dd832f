"""JSON encoding of saga inputs and step results, through cattrs. Never pickle.

attrs classes, dataclasses, enums, datetimes and the plain JSON types are
supported; the type a value is rebuilt as comes from the saga's ``input_type``
or the step handler's return annotation.
"""

from __future__ import annotations

import enum
import functools
import json
import typing
from json.encoder import encode_basestring_ascii
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter

_converter = make_converter()
_PLAIN = (str, int, bool, type(None))
#: ``json.dumps`` with these options would build an encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


#: The largest value stored, as JSON text.
MAX_SIZE = 16 * 1024 * 1024


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON.

    Raises:
        TypeError, ValueError: the value (or something inside it) is not JSON,
            is nested too deeply, or is larger than ``MAX_SIZE``.
    """
    try:
        if type(value) is str:
            text = encode_basestring_ascii(value)  # what json.dumps does with a str
        elif value is None:
            text = "null"
        elif isinstance(value, _PLAIN):
            text = json.dumps(value)
        else:
            text = _ENCODER.encode(_converter.unstructure(value))
    except RecursionError:
        raise ValueError("it is nested too deeply to store") from None
    if len(text) > MAX_SIZE:
        raise ValueError(f"it is {len(text):,} characters as JSON, over the {MAX_SIZE:,} limit")
    return text


#: The longest error text stored; longer ones are cut, with a marker.
MAX_ERROR = 8000


def storable(text: str) -> str:
    """``text`` made storable on every backend: NULs and lone surrogates escaped
    (``\\x00``, ``\\ud800``), cut to ``MAX_ERROR`` characters with a marker."""
    safe = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if len(safe) > MAX_ERROR:
        safe = f"{safe[:MAX_ERROR]}... [cut: {len(safe):,} characters in all]"
    return safe


def loads(text: str | None, type_: Any = None) -> Any:
    """Decode JSON ``text``, rebuilt as ``type_`` when one is given."""
    if text is None:
        return None
    data = json.loads(text)
    if type_ is None or data is None:
        return data
    return _converter.structure(data, type_)


def round_trip_problem(value: Any, type_: Any, text: str | None = None) -> str | None:
    """Why ``value`` would not come back equal from storage as ``type_`` (a field
    of the wrong type inside an attrs instance, say), or ``None`` if it would.

    The value must already encode (``dumps``); ``text``: what it encodes to, if
    the caller has it already."""
    if type(value) is type_ and _plain_fields_hold(value):
        return None
    try:
        back = loads(dumps(value) if text is None else text, type_)
    except cattrs.BaseValidationError as exc:
        return "; ".join(cattrs.transform_error(exc))
    except (TypeError, ValueError) as exc:
        return str(exc)
    if back == value:
        return None
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            mine, stored = getattr(value, field.name), getattr(back, field.name)
            if mine != stored or type(mine) is not type(stored):
                wanted = getattr(field.type, "__name__", str(field.type))
                return (
                    f"field {field.name!r} is {type(mine).__name__} {mine!r}, but it is "
                    f"declared {wanted} (it would come back as {stored!r})"
                )
    return f"{value!r} would come back from storage as {back!r}"


def _plain_fields_hold(value: Any) -> bool:
    """Whether ``value`` is an attrs instance whose fields are all declared ``str``,
    ``int``, ``float`` or ``bool`` and each holds exactly its declared type: such a
    value that encodes comes back equal (the common input, checked without
    decoding it)."""
    fields = _plain_fields(value.__class__)
    if fields is None:
        return False
    for name, kind in fields:  # noqa: SIM110 - a loop: a generator costs a call per field
        if type(getattr(value, name)) is not kind:
            return False
    return True


@functools.lru_cache(maxsize=512)
def _plain_fields(cls: type) -> tuple[tuple[str, type], ...] | None:
    """An attrs class's (field, type) pairs if every field is declared a plain
    scalar type; ``None`` otherwise (or when its annotations cannot be resolved)."""
    if not attrs.has(cls):
        return None
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return None
    pairs: list[tuple[str, type]] = []
    for field in attrs.fields(cls):
        kind = hints.get(field.name)
        if kind not in (str, int, float, bool):
            return None
        pairs.append((field.name, kind))
    return tuple(pairs)


_FROZEN_SCALARS = (str, int, float, bool, type(None), bytes, enum.Enum)


def frozen(value: Any) -> bool:
    """Whether ``value`` cannot be changed in place (so a handler may be handed the
    very object, not a copy): scalars, enums, and tuples, frozensets and frozen
    attrs instances made of such values."""
    if isinstance(value, _FROZEN_SCALARS):
        return True
    if isinstance(value, tuple | frozenset):
        return all(frozen(v) for v in value)
    names = _frozen_fields(value.__class__)
    if names is None:
        return False
    for name in names:  # noqa: SIM110 - a loop: a generator costs a call per field
        if not frozen(getattr(value, name)):
            return False
    return True


@functools.lru_cache(maxsize=512)
def _frozen_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a frozen attrs class; ``None`` for any other class.

    attrs says a class is frozen only through the __setattr__ it installs; when
    that cannot be told, the value is copied, which is merely slower."""
    if not attrs.has(cls) or getattr(cls.__setattr__, "__name__", "") != "_frozen_setattrs":
        return None
    return tuple(f.name for f in attrs.fields(cls))


def stored(value: Any, type_: Any) -> tuple[Any, str]:
    """``value`` as a resumed saga would see it, and its JSON: encoded, then
    decoded as ``type_`` (the handler's return annotation; ``None``: plain JSON).

    Raises:
        ValueError: it would come back different (another shape or type) — the
            message says what it would come back as.
        TypeError, ValueError: it cannot be encoded (see ``dumps``).
    """
    text = dumps(value)
    if isinstance(value, _PLAIN) and (type_ is None or type_ is type(value)):
        return value, text
    try:
        back = loads(text, type_)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise ValueError(f"it cannot be read back as {type_!r}: {exc}") from None
    # A number may come back int for float or float for int (5 and 5.0): equal is enough.
    numbers = isinstance(value, float | int) and type(back) in (float, int)
    if back != value or (type(back) is not type(value) and not numbers):
        raise ValueError(f"it would come back from storage as {back!r}")
    return back, text
