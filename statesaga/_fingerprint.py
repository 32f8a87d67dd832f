"""A saga definition's fingerprint: a hash of the structure its stored sagas
depend on, which resume checks so a saga never continues on a different flow."""

from __future__ import annotations

import hashlib
import types
import typing
from typing import Any

from statesaga._spec import Handler, StepSpec


def return_type(fn: Handler) -> Any:
    """A handler's annotated return type (``None`` for none, ``None`` or ``Any``)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        # Unresolvable forward references: fall back to the raw annotation.
        hints = getattr(fn, "__annotations__", {})
    ret = hints.get("return")
    return None if ret in (None, type(None), Any) else ret


def fingerprint(name: str, version: int, steps: list[StepSpec]) -> str:
    """A hash of the structure a stored saga depends on: each step's and
    compensation's name, transactionality and annotated result type (stored
    results are rebuilt as that type, so a changed type is a changed structure)."""
    parts = [name, str(version)]
    for s in steps:
        comp = "-"
        if s.compensation:
            c = s.compensation
            comp = f"{c.name}{'/tx' if c.transactional else ''}"
            comp += f"->{_type_name(return_type(c.handler))}"
        tx = "tx" if s.transactional else "local"
        wait = f"/wait:{s.wait.event}" if s.wait is not None else ""
        parts.append(f"{s.name}/{comp}/{tx}->{_type_name(s.result_type)}{wait}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _type_name(t: Any) -> str:
    """A result type by qualified name, generics with their arguments
    (``list[Receipt]``, ``Receipt | None``). Not by module: a definition run
    as a script (``__main__``) and recovered from its module must agree."""
    if t is None or t is type(None):
        return "None"
    if t is Ellipsis:
        return "..."
    if isinstance(t, list):  # the parameters of a Callable
        return f"[{', '.join(_type_name(a) for a in t)}]"
    if isinstance(t, str):  # an annotation that does not resolve
        return t
    if isinstance(t, typing.ForwardRef):
        return t.__forward_arg__
    origin = typing.get_origin(t)
    if origin is None:
        return str(getattr(t, "__qualname__", None) or repr(t))
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    return f"{_type_name(origin)}[{', '.join(_type_name(a) for a in args)}]"
