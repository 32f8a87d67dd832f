"""Properties of the diagram graph model over random saga definitions.

Hypothesis generates definitions (step count, which steps have compensations,
retry policies of steps and compensations, transactional flags), and for the
overlay also a failure script run through the real engine.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statesaga import InvalidDefinition, Retry, Saga, SagaEngine, step
from statesaga._definition import TERMINALS
from statesaga._journal import replay
from statesaga.diagrams import GraphModel, model_of, scripted_run, to_dot, to_mermaid

_names = itertools.count()


@st.composite
def definitions(draw: st.DrawFn) -> type[Saga]:
    """A random valid saga class: 1-7 steps, any of them compensated, with
    retry policies of 1-4 attempts and random transactional flags."""
    n = draw(st.integers(1, 7))
    attempts = st.integers(1, 4)
    steps = [(draw(attempts), draw(st.booleans())) for _ in range(n)]
    comps = [draw(st.none() | st.tuples(attempts, st.booleans())) for _ in range(n)]
    version = draw(st.integers(1, 3))
    try:
        return _define(steps, comps, version)
    except InvalidDefinition:
        # A compensation of the last step can never run, and the definition
        # checks may reject it: the same saga without it is valid.
        return _define(steps, [*comps[:-1], None], version)


def _define(
    steps: list[tuple[int, bool]], comps: list[tuple[int, bool] | None], version: int
) -> type[Saga]:
    cls_name = f"Generated{next(_names)}"
    ns: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": cls_name,
        "name": cls_name.lower(),
        "version": version,
    }
    for i, ((tries, tx), comp) in enumerate(zip(steps, comps, strict=True)):
        decl = step(retry=Retry(max_attempts=tries), transactional=tx)(
            _handler(cls_name, f"s{i}", ("self", "ctx"))
        )
        ns[f"s{i}"] = decl
        if comp is not None:
            ns[f"undo_s{i}"] = decl.compensate(
                retry=Retry(max_attempts=comp[0]), transactional=comp[1]
            )(_handler(cls_name, f"undo_s{i}", ("self", "ctx", "result")))
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


def reachable(model: GraphModel, start: str, reverse: bool = False) -> set[str]:
    """States reachable from ``start`` along the model's possible edges
    (backwards with ``reverse``: the states that can reach ``start``)."""
    adjacent: dict[str, set[str]] = {}
    for e in model.edges:
        if e.possible:
            a, b = (e.dest, e.source) if reverse else (e.source, e.dest)
            adjacent.setdefault(a, set()).add(b)
    seen = {start}
    todo = deque([start])
    while todo:
        for nxt in adjacent.get(todo.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@given(definitions())
def test_graph_model_of_any_definition(saga: type[Saga]) -> None:
    """One node per FSM state; one edge per transition; every state reachable
    from the start (definitions whose states could not all be entered are
    rejected: a compensation on the last step is invalid, and a saga without
    compensations has no ``compensation_failed``). Every non-terminal state has
    a path to a terminal, terminals have none out, and both renderers draw
    every node."""
    model = model_of(saga)
    states = [s.name for s in saga.machine.states]
    assert [n.id for n in model.nodes] == states
    assert len(set(states)) == len(states)
    assert len(model.edges) == len(saga.machine.transitions)
    assert {e.source for e in model.edges} | {e.dest for e in model.edges} <= set(states)

    assert set(states) == reachable(model, model.initial)
    can_finish: set[str] = set()
    for t in TERMINALS:
        can_finish |= reachable(model, t, reverse=True)
    for n in model.nodes:
        if n.kind == "terminal":
            assert not model.edges_from(n.id)
        else:
            assert n.id in can_finish, f"{n.id} has no path to a terminal"

    dot = to_dot(model)
    mermaid = to_mermaid(model)
    for n in model.nodes:
        assert f"\t{n.id} [" in dot
        assert f"    class {n.id} " in mermaid
    for e in model.drawn_edges:
        assert e.source in dot and f"    {e.source} --> {e.dest}" in mermaid


@st.composite
def runs(draw: st.DrawFn) -> tuple[type[Saga], dict[str, int | None]]:
    """A random definition and a failure script for it: some of its steps and
    compensations fail their first few attempts, or every attempt."""
    saga = draw(definitions())
    names = [s.name for s in saga.spec.steps] + [
        s.compensation.name for s in saga.spec.steps if s.compensation
    ]
    script = draw(
        st.dictionaries(st.sampled_from(names), st.none() | st.integers(1, 3), max_size=4)
    )
    return saga, script


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs())
def test_overlay_of_any_run_follows_the_model(
    engine: SagaEngine, run: tuple[type[Saga], dict[str, int | None]]
) -> None:
    """For any definition and failure script run through the engine, the overlay's
    path is a walk over the model's edges from the initial state, numbered 1..n,
    entering exactly the states the log enters, in log order, and ending in the
    terminal of the saga's status; each edge's numbers are the positions at
    which the path takes it. The path is the journal's own reading of the log
    (``replay``), move for move."""
    saga, script = run
    saga_id = f"{saga.spec.name}-run"
    result = scripted_run(saga, engine, saga_id, script)
    history = engine.history(saga_id)
    model = model_of(saga).with_path(history, result.status.value, saga_id=saga_id)

    assert [p.number for p in model.path] == list(range(1, len(model.path) + 1))
    moves = replay(saga.machine, history).moves
    assert [(p.source, p.dest, p.kind, p.attempt, p.error) for p in model.path] == [
        (m.source, m.dest, m.kind, m.attempt, m.error) for m in moves
    ]
    assert model.path[0].source == model.initial if model.path else True
    for a, b in itertools.pairwise(model.path):
        assert a.dest == b.source
    edge_keys = {(e.source, e.dest, e.kind) for e in model.edges}
    assert all((p.source, p.dest, p.kind) in edge_keys for p in model.path)
    for e in model.edges:
        assert e.taken == tuple(
            p.number for p in model.path if (p.source, p.dest, p.kind) == (e.source, e.dest, e.kind)
        )

    comp_of = {s.name: s.compensation.name for s in saga.spec.steps if s.compensation}
    entered = [
        e.step if e.status == "executing" else comp_of[e.step]
        for e in history
        if e.status in ("executing", "compensating")
    ]
    assert list(model.visited) == [*entered, result.status.value]
    assert model.current is None
    assert model.node(result.status.value).outcome == "reached"
    visited = set(model.visited)
    assert {n.id for n in model.nodes if n.outcome is not None} == visited
