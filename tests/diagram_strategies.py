"""Hypothesis strategies for the diagram tests: random saga definitions, failure
scripts for them, and names that are hard on a renderer.

``definitions()`` draws the structure (step count, which steps have
compensations, retry policies, transactional flags); ``definitions(hostile_names())``
also draws every step's and compensation's name from unicode identifiers and
words Mermaid reads as syntax.
"""

from __future__ import annotations

import itertools
import keyword
from typing import Any

from hypothesis import strategies as st

from statesaga import InvalidDefinition, Retry, Saga, step
from statesaga._definition import RESERVED_NAMES

_classes = itertools.count()

#: Step and compensation names that Mermaid reads as syntax (keywords of its
#: diagrams, directions, the edge letters ``o``/``x``), that its ``class``
#: statement mangles (non-ASCII), that fold to the same ASCII, or that look like
#: the ids the renderer makes up (``x4e88`` is how ``予`` is spelt in an id).
MERMAID_WORDS = (
    "end",
    "graph",
    "flowchart",
    "subgraph",
    "style",
    "linkStyle",
    "classDef",
    "click",
    "call",
    "callback",
    "href",
    "default",
    "direction",
    "interpolate",
    "note",
    "Note",
    "State",
    "stateDiagram",
    "scale",
    "accTitle",
    "accDescr",
    "title",
    "TB",
    "LR",
    "o",
    "x",
    "v",
    "forward",
    "chain",
    "i_start",
    "s_note",
    "réserver_stock",
    "reserver_stock",
    "Δ_delta",
    "予約する",
    "予",
    "x4e88",
)


def _usable(name: str) -> bool:
    """Whether a saga accepts ``name`` for a step or compensation."""
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith("_")
        and name not in RESERVED_NAMES
    )


def hostile_names() -> st.SearchStrategy[str]:
    """Names a step or compensation may take that a renderer may not like:
    Mermaid's words, or any unicode identifier (letters of any script,
    combining marks, digits and connectors after the first character)."""
    identifiers = st.text(
        st.characters(categories=["L", "Nl", "Mn", "Mc", "Nd", "Pc"]), min_size=1, max_size=10
    ).filter(_usable)
    return st.sampled_from(MERMAID_WORDS) | identifiers


@st.composite
def definitions(draw: st.DrawFn, names: st.SearchStrategy[str] | None = None) -> type[Saga]:
    """A random valid saga class: 1-7 steps, any of them compensated, with
    retry policies of 1-4 attempts and random transactional flags; named
    ``s0``, ``undo_s0``... or, with ``names``, by names drawn from it."""
    n = draw(st.integers(1, 7))
    attempts = st.integers(1, 4)
    steps = [(draw(attempts), draw(st.booleans())) for _ in range(n)]
    comps = [draw(st.none() | st.tuples(attempts, st.booleans())) for _ in range(n)]
    version = draw(st.integers(1, 3))
    if names is None:
        labels = [f"s{i}" for i in range(n)] + [f"undo_s{i}" for i in range(n)]
    else:
        labels = draw(st.lists(names, min_size=2 * n, max_size=2 * n, unique=True))
    try:
        return _define(steps, comps, version, labels)
    except InvalidDefinition:
        # A compensation of the last step can never run, and the definition
        # checks may reject it: the same saga without it is valid.
        return _define(steps, [*comps[:-1], None], version, labels)


def _define(
    steps: list[tuple[int, bool]],
    comps: list[tuple[int, bool] | None],
    version: int,
    labels: list[str],
) -> type[Saga]:
    cls_name = f"Generated{next(_classes)}"
    ns: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": cls_name,
        "name": cls_name.lower(),
        "version": version,
    }
    n = len(steps)
    for i, ((tries, tx), comp) in enumerate(zip(steps, comps, strict=True)):
        name, undo = labels[i], labels[n + i]
        decl = step(retry=Retry(max_attempts=tries), transactional=tx)(
            _handler(cls_name, name, ("self", "ctx"))
        )
        ns[name] = decl
        if comp is not None:
            ns[undo] = decl.compensate(retry=Retry(max_attempts=comp[0]), transactional=comp[1])(
                _handler(cls_name, undo, ("self", "ctx", "result"))
            )
    return type(cls_name, (Saga,), ns)


def _handler(cls_name: str, name: str, params: tuple[str, ...]) -> Any:
    """A do-nothing handler named as if written in the class body."""

    def step_fn(self: Any, ctx: Any) -> None:
        return None

    def compensation_fn(self: Any, ctx: Any, result: Any) -> None:
        return None

    fn = step_fn if len(params) == 2 else compensation_fn
    fn.__name__ = name
    fn.__qualname__ = f"{cls_name}.{name}"
    return fn


@st.composite
def runs(
    draw: st.DrawFn, names: st.SearchStrategy[str] | None = None
) -> tuple[type[Saga], dict[str, int | None]]:
    """A random definition and a failure script for it: some of its steps and
    compensations fail their first few attempts, or every attempt."""
    saga = draw(definitions(names))
    state_names = [s.name for s in saga.spec.steps] + [
        s.compensation.name for s in saga.spec.steps if s.compensation
    ]
    script = draw(
        st.dictionaries(st.sampled_from(state_names), st.none() | st.integers(1, 3), max_size=4)
    )
    return saga, script
