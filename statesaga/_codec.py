"""JSON encoding of saga inputs and step results, through cattrs. Never pickle.

attrs classes, dataclasses, enums, datetimes and the plain JSON types are
supported; the type a value is rebuilt as comes from the saga's ``input_type``
or the step handler's return annotation.
"""

from __future__ import annotations

import json
from typing import Any

from cattrs.preconf.json import make_converter

_converter = make_converter()
_PLAIN = (str, int, bool, type(None))


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON.

    Raises:
        TypeError, ValueError: the value (or something inside it) is not JSON.
    """
    if isinstance(value, _PLAIN):
        return json.dumps(value)
    return json.dumps(_converter.unstructure(value), separators=(",", ":"), allow_nan=False)


def loads(text: str | None, type_: Any = None) -> Any:
    """Decode JSON ``text``, rebuilt as ``type_`` when one is given."""
    if text is None:
        return None
    data = json.loads(text)
    if type_ is None or data is None:
        return data
    return _converter.structure(data, type_)
