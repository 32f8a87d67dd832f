"""Properties of the diagram graph model over random saga definitions.

Hypothesis generates definitions (``tests.diagram_strategies``: step count,
which steps have compensations, retry policies of steps and compensations,
transactional flags, and names, plain or hostile), and for the overlay also a
failure script run through the real engine.
"""

from __future__ import annotations

import itertools
import re
from collections import deque

from graphviz.quoting import quote
from hypothesis import HealthCheck, given, settings

from statesaga import Saga, SagaEngine
from statesaga._definition import TERMINALS
from statesaga._replay import replay
from statesaga.diagrams import GraphModel, model_of, scripted_run, to_dot, to_mermaid
from statesaga.diagrams.mermaid import node_ids
from tests.diagram_strategies import definitions, hostile_names, runs


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


@given(definitions() | definitions(hostile_names()))
def test_graph_model_of_any_definition(saga: type[Saga]) -> None:
    """One node per FSM state; one edge per transition; every state reachable
    from the start (definitions whose states could not all be entered are
    rejected: a compensation on the last step is invalid, and a saga without
    compensations has no ``compensation_failed``). Every non-terminal state has
    a path to a terminal, terminals have none out, and both renderers draw
    every node and every edge; Mermaid under ids of its own, one per state,
    ASCII letters, digits and ``_`` only, whatever the state's name."""
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
        if n.kind == "terminal":  # only an operator leaves one
            assert all(e.kind in ("resolve", "redo") for e in model.edges_from(n.id))
        else:
            assert n.id in can_finish, f"{n.id} has no path to a terminal"

    dot = to_dot(model)
    mermaid = to_mermaid(model)
    ids = node_ids(model)
    assert len(set(ids.values())) == len(ids) == len(model.nodes)
    classed = [ln.split()[1] for ln in mermaid.splitlines() if ln.startswith("    class ")]
    styled = {id for ids_ in classed for id in ids_.split(",")}
    for n in model.nodes:
        assert re.fullmatch(r"[stc]_[A-Za-z0-9_]+", ids[n.id])
        assert f"\t{quote(n.id)} [" in dot
        assert ids[n.id] in styled
    for e in model.drawn_edges:
        link = rf'    {ids[e.source]} (==>|-->|-\.->)(\|"[^"]*"\|)? {ids[e.dest]}\n'
        assert re.search(link, mermaid), (e, mermaid)


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
