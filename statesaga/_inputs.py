"""What a new saga is started with, checked before anything is stored.

An id must be storable and printable the same on every backend; an input must
be of the saga's ``input_type`` and come back equal from its JSON, since a
resumed saga sees only what was stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from statesaga import _codec as codec
from statesaga._errors import InvalidInput, SerializationError
from statesaga._spec import SagaSpec

#: The longest saga id (the column's width).
MAX_ID = 200


def checked(spec: SagaSpec, input: Any, saga_id: str | None) -> tuple[str, str]:
    """The new saga's id (``saga_id``, or a fresh one) and its input's JSON.

    Raises:
        InvalidInput: the id cannot be stored, or the input is not of the saga's
            ``input_type`` or does not come back equal from its JSON.
        SerializationError: the input cannot be stored at all.
    """
    if spec.input_type is not None and not isinstance(input, spec.input_type):
        raise InvalidInput(spec.name, spec.input_type, input)
    sid = saga_id if saga_id is not None else uuid.uuid4().hex
    problem = _bad_id(sid)
    if problem is not None:
        raise InvalidInput(spec.name, str, sid, problem)
    try:
        input_text = codec.dumps(input)
    except (TypeError, ValueError) as exc:
        raise SerializationError(spec.name, saga_id, "input", input, str(exc)) from exc
    if spec.input_type is not None:
        problem = codec.round_trip_problem(input, spec.input_type, input_text)
        if problem is not None:
            raise InvalidInput(spec.name, spec.input_type, input, problem)
    return sid, input_text


def _bad_id(saga_id: object) -> str | None:
    """Why ``saga_id`` cannot be a saga id, the same on every backend, or ``None``."""
    if not isinstance(saga_id, str):
        return f"a saga id is a str, got {type(saga_id).__name__}"
    if not saga_id or len(saga_id) > MAX_ID:
        return f"a saga id has 1 to {MAX_ID} characters, this one {len(saga_id)}"
    if not saga_id.isprintable():
        return (
            f"the saga id {saga_id!r} has a character that cannot be stored or shown "
            "(a control character, NUL or lone surrogate); use printable text"
        )
    return None
