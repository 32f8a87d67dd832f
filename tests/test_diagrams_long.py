"""Long sagas wrap: the DOT drawing of a saga of many steps is cut into bands, so
a 60-step saga is a page, not a 15,000-pixel strip; short sagas are drawn as
before (the committed diagrams under ``diagrams/`` are checked in
``test_diagrams``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statesaga import Saga, SagaEngine
from statesaga.diagrams import model_of, render, scripted_run, to_dot
from statesaga.diagrams.dot import WRAP_AFTER
from tests.diagram_strategies import _define


def saga_of(n: int, compensated: str = "all", retries: int = 1) -> type[Saga]:
    """A saga of ``n`` steps: every one compensated but the last (``all``), none
    (``none``), or every other one (``alternate``)."""
    has = {
        "all": lambda i: i < n - 1,
        "none": lambda i: False,
        "alternate": lambda i: i % 2 == 0 and i < n - 1,
    }[compensated]
    labels = [f"step_{i:02d}" for i in range(n)] + [f"undo_{i:02d}" for i in range(n)]
    return _define(
        [(retries, False)] * n,
        [(1, False) if has(i) else None for i in range(n)],
        1,
        labels,
    )


def size(svg: bytes) -> tuple[float, float]:
    """The width and height of a rendered SVG, in points."""
    found = re.search(rb'<svg width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    assert found, svg[:300]
    return float(found[1]), float(found[2])


def drawn(svg: bytes) -> tuple[set[str], set[tuple[str, str]]]:
    """The node ids and the (tail, head) pairs of the edges an SVG shows."""
    text = svg.decode()
    nodes = set(re.findall(r'class="node">\s*<title>([^<]+)</title>', text))
    edges: set[tuple[str, str]] = set()
    for title in re.findall(r'class="edge">\s*<title>([^<]+)</title>', text):
        tail, head = (end.split(":")[0] for end in title.split("&#45;&gt;"))  # ports: a:n
        edges.add((tail, head))
    return nodes, edges


@pytest.mark.parametrize("direction", ["LR", "TB"])
def test_a_60_step_saga_is_not_a_strip(direction: str) -> None:
    """The issue's case: 60 steps drew as a 15,194 x 474 px strip. Wrapped, its
    SVG is no more than four times as long as it is wide, either way round."""
    width, height = size(render(model_of(saga_of(60)), "svg", direction=direction))  # type: ignore[arg-type]
    assert width / height < 4 and height / width < 4, (width, height)


@pytest.mark.parametrize("compensated", ["all", "none", "alternate"])
def test_a_wrapped_saga_draws_every_state_and_transition(compensated: str) -> None:
    """Nothing is lost in the wrap: every state is a node and every transition of
    the model an edge of the SVG, in its own direction (an edge laid out against
    the bands' order is drawn reversed, arrow and all, not turned round)."""
    model = model_of(saga_of(30, compensated, retries=2))
    svg = render(model, "svg")
    nodes, edges = drawn(svg)
    assert {n.id for n in model.nodes} <= nodes
    for e in model.drawn_edges:
        assert (e.source, e.dest) in edges or (e.dest, e.source) in edges, e
    lines = [ln for ln in to_dot(model).splitlines() if "->" in ln and "invis" not in ln]
    for e in model.drawn_edges:
        ahead = any(ln.startswith(f"\t{e.source} -> {e.dest} [") for ln in lines)
        back = any(
            ln.startswith(f"\t{e.dest} -> {e.source} [") and "dir=back" in ln for ln in lines
        )
        assert ahead or back, e


def test_a_saga_of_up_to_the_limit_is_drawn_in_one_row() -> None:
    """Up to ``WRAP_AFTER`` steps the drawing is the row it always was: no
    bands, no reversed edges; one more step wraps it."""
    one_row = to_dot(model_of(saga_of(WRAP_AFTER)))
    assert "rankdir=LR" in one_row and "dir=back" not in one_row
    wrapped = to_dot(model_of(saga_of(WRAP_AFTER + 1)))
    assert "rankdir=TB" in wrapped and "dir=back" in wrapped


def test_an_overlay_of_a_long_saga_wraps_too(engine: SagaEngine) -> None:
    """A run of a 60-step saga that fails at its last step and compensates every
    other one is drawn wrapped, with every transition it took numbered."""
    saga = saga_of(60)
    run = scripted_run(saga, engine, "long-1", {"step_59": None})
    model = model_of(saga).with_path(engine.history("long-1"), run.status.value, saga_id="long-1")
    assert run.status.value == "failed" and len(model.path) > 100
    svg = render(model, "svg")
    width, height = size(svg)
    assert width / height < 4 and height / width < 4, (width, height)
    badges = {int(n) for n in re.findall(rb"<text[^>]*>\s*(\d+)\s*</text>", svg)}
    assert set(range(1, len(model.path) + 1)) <= badges


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(WRAP_AFTER + 1, 48),
    comps=st.sampled_from(["all", "none", "alternate"]),
    retries=st.integers(1, 2),
    direction=st.sampled_from(["LR", "TB"]),
)
def test_any_long_saga_renders_wrapped(n: int, comps: str, retries: int, direction: str) -> None:
    """Graphviz lays out any long saga's bands without an error or a warning, and
    the result is never a strip."""
    svg = render(model_of(saga_of(n, comps, retries)), "svg", direction=direction)  # type: ignore[arg-type]
    width, height = size(svg)
    assert width / height < 4 and height / width < 4, (n, width, height)
