"""Diagrams: the graph model, the instance overlay, DOT, Mermaid, rendering and the CLI."""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygraphviz
import pytest
from click.testing import CliRunner

from definitions.order import OrderRequest, OrderSaga
from definitions.services import FakeServices
from definitions.transfer import TransferSaga
from definitions.trip import TripSaga
from statesaga import EntryStatus, Hooks, LogEntry, Saga, SagaEngine, SagaStatus, step
from statesaga._discovery import load_sagas
from statesaga.cli import main
from statesaga.diagrams import (
    DefinitionNotFound,
    GraphModel,
    HistoryMismatch,
    RenderError,
    find_sagas,
    generate,
    instance_model,
    model_of,
    render,
    render_dot,
    scripted_run,
    to_dot,
    to_mermaid,
    write,
)
from statesaga.diagrams import dot as dot_module
from statesaga.diagrams.mermaid import node_ids
from statesaga.diagrams.render import DotError

SAGAS: list[type[Saga]] = [OrderSaga, TripSaga, TransferSaga]
ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 1, 1, tzinfo=UTC)


def entered_states(model: GraphModel, history: Sequence[LogEntry]) -> list[str]:
    """The states a log's entries enter, in log order: an ``executing`` entry
    enters its step, a ``compensating`` entry the compensation of its step."""
    comp_of = {n.step: n.id for n in model.compensations}
    out = []
    for e in history:
        if e.status is EntryStatus.EXECUTING:
            out.append(e.step)
        elif e.status is EntryStatus.COMPENSATING:
            out.append(comp_of[e.step])
    return out


def drawn_edges(dot: str) -> list[tuple[str, str, dict[str, str]]]:
    """The visible edges of DOT source, parsed by Graphviz itself."""
    graph = pygraphviz.AGraph(string=dot)
    return [
        (e[0], e[1], dict(e.attr))
        for e in graph.edges()
        if e.attr.get("style") != "invis" and e[0] != dot_module.START
    ]


# -- the graph model --------------------------------------------------------


@pytest.mark.parametrize("saga", SAGAS, ids=lambda s: s.spec.name)
def test_one_node_per_state_and_one_edge_per_transition(saga: type[Saga]) -> None:
    """The model has exactly the machine's states, each once and of the same
    kind, and exactly its transitions, in the same order."""
    model = model_of(saga)
    assert [(n.id, n.kind, n.step) for n in model.nodes] == [
        (s.name, s.kind, s.step) for s in saga.machine.states
    ]
    assert [(e.source, e.dest, e.kind, e.trigger, e.condition) for e in model.edges] == [
        (t.source, t.dest, t.kind, t.trigger, t.condition) for t in saga.machine.transitions
    ]
    assert model.initial == saga.machine.initial
    assert (model.name, model.version, model.fingerprint) == (
        saga.spec.name,
        saga.spec.version,
        saga.spec.fingerprint,
    )


@pytest.mark.parametrize("saga", SAGAS, ids=lambda s: s.spec.name)
def test_every_step_and_compensation_appears_with_its_policy(saga: type[Saga]) -> None:
    """Each step is a node with its index, retry policy, transactionality and
    compensation link; each compensation a node naming the step it undoes."""
    model = model_of(saga)
    for s in saga.spec.steps:
        node = model.node(s.name)
        assert node.kind == "step"
        assert node.index == s.index
        assert node.max_attempts == s.retry.max_attempts
        assert node.transactional == s.transactional
        assert node.compensable == (s.compensation is not None)
        if s.compensation is None:
            assert node.compensation is None
            continue
        assert node.compensation == s.compensation.name
        comp = model.node(s.compensation.name)
        assert (comp.kind, comp.step) == ("compensation", s.name)
        assert comp.max_attempts == s.compensation.retry.max_attempts
        assert comp.transactional == s.compensation.transactional
    assert [n.id for n in model.terminals] == [
        "completed",
        "failed",
        "compensation_failed",
        "resolved",  # reached only by an operator's resolve
    ]
    assert model.forward_path == (*(s.name for s in saga.spec.steps), "completed")
    # The compensation chain runs from the last compensable step to the first.
    assert [n.step for n in model.compensations] == [
        s.name for s in reversed(saga.spec.steps) if s.compensation
    ]


def test_steps_without_compensation_and_transactional_steps_are_marked() -> None:
    """The trip's last two steps have no compensation; the transfer's debit,
    credit and their compensations are transactional; the model says so."""
    trip = model_of(TripSaga)
    assert [n.id for n in trip.steps if not n.compensable] == ["issue_tickets", "send_itinerary"]
    transfer = model_of(TransferSaga)
    assert {n.id for n in transfer.nodes if n.transactional} == {
        "debit_source",
        "credit_target",
        "refund_source",
        "reverse_credit",
    }


def test_only_policies_that_retry_have_possible_retry_loops() -> None:
    """The machine has a retry loop on every state; the model marks as possible
    only those whose policy allows a second attempt."""
    model = model_of(TripSaga)
    possible = {e.source for e in model.edges if e.kind == "retry" and e.possible}
    assert possible == {"book_flight", "cancel_hotel"}
    # The operator's cancel (where a failure leads) and retries into the chain
    # below its top are drawn only when a saga took them.
    assert all(e.possible for e in model.edges if e.kind not in ("retry", "cancel", "redo"))


# -- the instance overlay ---------------------------------------------------


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
def order_engine(engine: SagaEngine, services: FakeServices) -> SagaEngine:
    engine.register(OrderSaga(services))
    return engine


def overlay_of(engine: SagaEngine, saga_id: str, saga: type[Saga] = OrderSaga) -> GraphModel:
    run = engine.get(saga_id)
    return model_of(saga).with_path(
        engine.history(saga_id), run.status.value, saga_id=saga_id, error=run.error
    )


def test_overlay_of_a_failed_order_marks_its_path_in_log_order(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """Inventory fails: the overlay numbers the transitions 1..n in log order,
    visits exactly the states the log enters, marks the failing step with its
    error, the compensated steps and compensations, and the terminal reached;
    nothing else is marked."""
    services.fail("inventory.reserve", times=None)
    run = order_engine.run(OrderSaga, OrderRequest("c-1", 10.0), saga_id="o-1")
    assert run.status is SagaStatus.FAILED
    history = order_engine.history("o-1")
    model = overlay_of(order_engine, "o-1")

    assert model.visited == (*entered_states(model, history), "failed")
    assert model.visited == (
        "create_order",
        "charge_payment",
        "reserve_inventory",
        "refund_payment",
        "cancel_order",
        "failed",
    )
    assert [p.number for p in model.path] == list(range(1, len(model.path) + 1))
    assert [(p.source, p.dest, p.kind) for p in model.path] == [
        ("create_order", "charge_payment", "forward"),
        ("charge_payment", "reserve_inventory", "forward"),
        ("reserve_inventory", "refund_payment", "fail"),
        ("refund_payment", "cancel_order", "compensate"),
        ("cancel_order", "failed", "finish"),
    ]
    taken = {(e.source, e.dest, e.kind): e.taken for e in model.edges if e.taken}
    assert taken == {(p.source, p.dest, p.kind): (p.number,) for p in model.path}

    outcomes = {n.id: n.outcome for n in model.nodes if n.outcome}
    assert outcomes == {
        "create_order": "compensated",
        "charge_payment": "compensated",
        "reserve_inventory": "failed",
        "refund_payment": "compensated",
        "cancel_order": "compensated",
        "failed": "reached",
    }
    failing = model.node("reserve_inventory")
    assert failing.error == "ServiceError: inventory.reserve is unavailable"
    assert model.error == run.error == failing.error
    assert (model.status, model.current, model.saga_id) == ("failed", None, "o-1")


def test_overlay_shows_a_retry_loop_taken_twice(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """The payment fails twice, then succeeds: the retry loop carries path
    numbers 2 and 3, the step says three attempts, and the saga completes."""
    services.fail("payments.charge", times=2)
    order_engine.run(OrderSaga, OrderRequest("c-2", 5.0), saga_id="o-2")
    model = overlay_of(order_engine, "o-2")
    retry = next(e for e in model.edges if e.kind == "retry" and e.source == "charge_payment")
    assert retry.taken == (2, 3)
    assert model.node("charge_payment").attempts == 3
    assert model.node("charge_payment").outcome == "completed"
    assert model.node("charge_payment").outcome_text == "completed on attempt 3"
    assert model.node("charge_payment").error == "ServiceError: payments.charge is unavailable"
    assert model.visited[-1] == "completed"
    assert model.node("completed").outcome == "reached"
    assert model.status == "completed"
    assert all(n.outcome is None for n in model.compensations)
    assert model.error is None


class _CrashAt(Hooks):
    """Stops the engine (as a crash would) right after it enters ``state``."""

    def __init__(self, state: str) -> None:
        self.state = state

    def point(self, point: str, saga_id: str, state: str, attempt: int) -> None:
        if point == "after_commit" and state == self.state:
            raise _Crash(state)


class _Crash(BaseException):
    pass


def test_overlay_marks_the_current_state_of_a_running_saga(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """A saga stopped while compensating: the overlay marks the compensation it
    is in as running, with status ``compensating``, reaches no terminal, and the
    path ends at that state. Resumed after the crash, the same state is entered
    again without a transition, and the saga ends ``failed``."""
    services.fail("inventory.reserve", times=None)
    order_engine.hooks = _CrashAt("refund_payment")
    with pytest.raises(_Crash):
        order_engine.run(OrderSaga, OrderRequest("c-3", 1.0), saga_id="o-3")
    order_engine.hooks = None
    model = overlay_of(order_engine, "o-3")
    assert model.status == "compensating"
    assert model.current == "refund_payment"
    assert model.node("refund_payment").outcome == "running"
    assert model.path[-1].dest == "refund_payment"
    assert all(n.outcome is None for n in model.terminals)
    assert "running now" in to_dot(model)

    order_engine.resume("o-3")
    history = order_engine.history("o-3")
    model = overlay_of(order_engine, "o-3")
    assert entered_states(model, history).count("refund_payment") == 2
    assert model.node("refund_payment").attempts == 2
    assert model.current is None
    assert model.visited[-1] == "failed"


def test_overlay_of_a_saga_started_but_not_run(engine: SagaEngine) -> None:
    """A saga recorded by ``start`` has no log yet: it waits at the first step."""
    engine.register(OrderSaga(FakeServices()))
    engine.start(OrderSaga, OrderRequest("c-4", 1.0), saga_id="o-4")
    model = overlay_of(engine, "o-4")
    assert (model.status, model.current, model.path) == ("started", "create_order", ())
    assert model.visited == ("create_order",)
    assert model.node("create_order").outcome == "running"


def test_overlay_of_a_compensation_that_fails_for_good(engine: SagaEngine) -> None:
    """Charging the card fails and the hotel cannot be cancelled (three attempts):
    the compensation and its step are marked, the chain goes on past it along a
    ``compensation_failed`` edge, and the saga ends in ``compensation_failed``."""
    run = scripted_run(
        TripSaga, engine, "t-1", {"charge_card": None, "cancel_hotel": None, "book_flight": 1}
    )
    assert run.status is SagaStatus.COMPENSATION_FAILED
    model = overlay_of(engine, "t-1", TripSaga)
    assert model.visited == (*entered_states(model, engine.history("t-1")), "compensation_failed")
    assert model.node("cancel_hotel").outcome == "compensation_failed"
    assert model.node("cancel_hotel").attempts == 3
    assert model.node("cancel_hotel").error is not None
    assert model.node("book_hotel").outcome == "compensation_failed"
    assert model.node("book_flight").outcome == "compensated"
    assert model.node("issue_tickets").outcome is None
    kinds = [p.kind for p in model.path]
    assert kinds.count("retry") == 3  # book_flight once, cancel_hotel twice
    assert "compensation_failed" in kinds
    assert model.path[-1].dest == "compensation_failed"
    assert model.node("compensation_failed").outcome == "reached"
    assert model.node("failed").outcome is None


def test_overlay_rejects_a_log_of_another_definition(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """An order's log laid over the trip definition, or a status that
    contradicts the log, is a HistoryMismatch naming the definition."""
    order_engine.run(OrderSaga, OrderRequest("c-5", 1.0), saga_id="o-5")
    history = order_engine.history("o-5")
    with pytest.raises(HistoryMismatch, match="trip@v1"):
        model_of(TripSaga).with_path(history)
    with pytest.raises(HistoryMismatch, match="the saga is failed"):
        model_of(OrderSaga).with_path(history, "failed")
    with pytest.raises(HistoryMismatch, match="stops in"):
        model_of(OrderSaga).with_path(history[:3], "completed")
    # Read off the log alone, the status is the terminal reached.
    assert model_of(OrderSaga).with_path(history).status == "completed"


def test_instance_model_reads_the_store_and_finds_the_definition(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """``instance_model`` picks the definition by name, version and fingerprint
    among those given and lays the stored log over it; a saga whose definition
    is missing, or unknown ids, are clear errors."""
    services.fail("inventory.reserve", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-6", 3.0), saga_id="o-6")
    model = instance_model(order_engine, "o-6", find_sagas("definitions"))
    assert model == overlay_of(order_engine, "o-6")
    with pytest.raises(DefinitionNotFound, match="order v1"):
        instance_model(order_engine, "o-6", [TripSaga])
    with pytest.raises(LookupError, match="nope"):
        instance_model(order_engine, "nope", SAGAS)


def test_find_sagas_collects_every_definition_of_a_package() -> None:
    """Every concrete saga class defined in ``definitions`` is found, sorted,
    each once (classes a module merely imports are not counted twice)."""
    found = find_sagas("definitions")
    assert found == sorted(found, key=lambda s: (s.spec.name, s.spec.version))
    assert {OrderSaga, TripSaga, TransferSaga} <= set(found)
    assert len(found) == len({(s.spec.name, s.spec.version) for s in found})


def test_load_sagas_fails_with_one_error_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_sagas`` (behind every ``--definitions``) returns what ``find_sagas``
    finds, and raises ImportError, naming the module and the fix, for a package
    that is not there, a module whose own import fails, and two classes with
    one name and version."""
    assert load_sagas("definitions") == find_sagas("definitions")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_sagas adds the folder to it
    with pytest.raises(ImportError, match=r"'no_such_pkg'.*Run from the folder that contains it"):
        load_sagas("no_such_pkg")

    saga = "from statesaga import Saga, step\n\nclass {0}(Saga):\n    name = 'twice'\n"
    saga += "\n    @step()\n    def one(self, ctx):\n        return None\n"
    package = tmp_path / "dup_defs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(saga.format("A"))
    (package / "b.py").write_text(saga.format("B"))
    (package / "c.py").write_text("import no_such_dependency\n")
    with pytest.raises(ImportError, match=r"'dup_defs.c'.*install or fix what dup_defs.c imports"):
        load_sagas("dup_defs")
    (package / "c.py").unlink()
    with pytest.raises(ImportError, match=r"'dup_defs'.*twice@v1 is defined twice"):
        load_sagas("dup_defs")


# -- DOT --------------------------------------------------------------------


@pytest.mark.parametrize("saga", SAGAS, ids=lambda s: s.spec.name)
def test_dot_draws_every_state_and_every_possible_transition(saga: type[Saga]) -> None:
    """Graphviz parses the DOT; it has a node per state and one visible edge per
    possible transition, with the same endpoints."""
    model = model_of(saga)
    dot = to_dot(model)
    graph = pygraphviz.AGraph(string=dot)
    assert set(graph.nodes()) == {n.id for n in model.nodes} | {dot_module.START}
    edges = sorted((s, d) for s, d, _ in drawn_edges(dot))
    assert edges == sorted((e.source, e.dest) for e in model.edges if e.possible)


def test_dot_visual_language() -> None:
    """Forward edges are thick blue, compensations thick orange, failures dashed
    red, retries dotted; a step without compensation has a dashed border and says
    so; terminals are double ellipses; a compensation shares the rank of the step
    after the one it undoes, so failure edges drop straight down."""
    model = model_of(OrderSaga)
    dot = to_dot(model)
    edges = {(s, d): a for s, d, a in drawn_edges(dot)}
    assert edges[("create_order", "charge_payment")]["color"] == dot_module.BLUE
    assert edges[("refund_payment", "cancel_order")]["color"] in (
        dot_module.ORANGE,
        dot_module.DARK_RED,
    )
    assert edges[("reserve_inventory", "refund_payment")]["style"] == "dashed"
    assert edges[("reserve_inventory", "refund_payment")]["color"] == dot_module.RED
    assert edges[("charge_payment", "charge_payment")]["style"] == "dotted"
    graph = pygraphviz.AGraph(string=dot)
    assert "dashed" in graph.get_node("confirm_order").attr["style"]
    assert "no compensation" in graph.get_node("confirm_order").attr["label"]
    for t in ("completed", "failed", "compensation_failed"):
        assert graph.get_node(t).attr["peripheries"] == "2"
    ranks = [sorted(sg.nodes()) for sg in graph.subgraphs() if sg.graph_attr.get("rank")]
    assert sorted(["reserve_inventory", "refund_payment"]) in ranks
    assert sorted(["create_order", "failed", "compensation_failed", "resolved"]) in ranks
    assert "<b>order@v1</b>" in dot and "compensation failed, go on" in dot  # title, legend


def test_dot_of_an_overlay_numbers_taken_edges_and_greys_the_rest(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """Taken edges carry their path numbers; edges never taken and states
    never entered are greyed out; the failing step shows its error."""
    services.fail("inventory.reserve", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-7", 1.0), saga_id="o-7")
    model = overlay_of(order_engine, "o-7")
    dot = to_dot(model)
    labels: dict[tuple[str, str], list[str]] = {}
    for s, d, a in drawn_edges(dot):
        labels.setdefault((s, d), []).append(a.get("label") or a.get("xlabel", ""))
    for p in model.path:
        assert any(re.search(rf"<b> {p.number} </b>", lb) for lb in labels[(p.source, p.dest)])
    numbered = sum(lb.count("</b></font></td>") for lbs in labels.values() for lb in lbs)
    assert numbered == len(model.path)
    edges = {(s, d): a for s, d, a in drawn_edges(dot)}
    assert edges[("confirm_order", "completed")]["color"] == dot_module.FAINT
    graph = pygraphviz.AGraph(string=dot)
    assert graph.get_node("release_reservation").attr["color"] == dot_module.FAINT
    label = graph.get_node("reserve_inventory").attr["label"].replace("<br/>", " ")
    assert "inventory.reserve is unavailable" in label
    assert "saga <b>o-7</b>" in dot


def test_dot_failure_labels_sit_beside_their_arrow(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """A step's failure drops between the rows as a flat edge, whose plain label
    Graphviz would centre on the line: its label is an external one, which
    Graphviz places beside the arrow. Rendered, no part of it (the path-number
    badge, or the text at a generous width) meets the arrow's path."""
    services.fail("orders.confirm", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-12", 1.0), saga_id="o-12")
    model = overlay_of(order_engine, "o-12")
    dot = to_dot(model)
    for s, d, a in drawn_edges(dot):
        kind = next(e.kind for e in model.edges if (e.source, e.dest) == (s, d))
        assert ("xlabel" in a and "label" not in a) == (kind == "fail"), (s, d)
    svg = render_dot(dot, "svg").decode()
    edge = re.search(
        r"<title>confirm_order&#45;&gt;release_reservation</title>(.*?)</g>", svg, re.S
    )
    assert edge is not None
    numbers = [float(v) for v in re.findall(r"-?\d+\.?\d*", re.search(r' d="([^"]+)"', edge[1])[1])]
    path = _bezier(list(zip(numbers[::2], numbers[1::2], strict=True)))
    boxes = [
        (min(xs), max(xs), min(ys), max(ys))
        for pts in re.findall(r'<polygon fill="[^"]+" stroke="none" points="([^"]+)"', edge[1])
        for xs, ys in [list(zip(*(map(float, p.split(",")) for p in pts.split()), strict=True))]
    ]
    for x, y, size, words in re.findall(
        r'<text[^>]*x="([-\d.]+)" y="([-\d.]+)"[^>]*font-size="([\d.]+)"[^>]*>([^<]*)</text>',
        edge[1],
    ):
        x0, y0, em = float(x), float(y), float(size)
        boxes.append((x0, x0 + 0.5 * em * len(words.strip()), y0 - em, y0))
    assert len(boxes) == 3  # the badge, its number, "fail"
    for x0, x1, y0, y1 in boxes:
        assert not any(x0 <= px <= x1 and y0 <= py <= y1 for px, py in path), (x0, x1, y0, y1)


def _bezier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points along a Graphviz edge path (``M`` then cubic Bezier segments)."""
    out = []
    for i in range(0, len(points) - 3, 3):
        p0, c1, c2, p1 = points[i : i + 4]
        for k in range(41):
            t = k / 40
            out.append(
                tuple(
                    (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t**2 * c + t**3 * d
                    for a, b, c, d in zip(p0, c1, c2, p1, strict=True)
                )
            )
    return out  # type: ignore[return-value]


def test_dot_and_mermaid_draw_each_state_in_the_same_colours(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """Both renderers read one palette: in a definition and in an overlay, every
    state has the same line and fill colour in DOT as in Mermaid."""
    services.fail("inventory.reserve", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-10", 1.0), saga_id="o-10")
    for model in (model_of(OrderSaga), overlay_of(order_engine, "o-10")):
        graph = pygraphviz.AGraph(string=to_dot(model))
        mermaid = to_mermaid(model).splitlines()
        styles = {
            name: dict(part.split(":") for part in css.split(","))
            for name, css in (ln.split()[1:3] for ln in mermaid if ln.startswith("    classDef "))
        }
        of = {
            id: name
            for ids, name in (ln.split()[1:3] for ln in mermaid if ln.startswith("    class "))
            for id in ids.split(",")
        }
        ids = node_ids(model)
        for n in model.nodes:
            dot = graph.get_node(n.id).attr
            assert (dot["color"], dot["fillcolor"]) == (
                styles[of[ids[n.id]]]["stroke"],
                styles[of[ids[n.id]]]["fill"],
            ), n.id


def test_dot_is_deterministic_and_both_directions_render() -> None:
    """The same model gives the same DOT; LR and TB both render without a
    Graphviz error or warning."""
    model = model_of(TripSaga)
    assert to_dot(model) == to_dot(model_of(TripSaga))
    for direction in ("LR", "TB"):
        assert b"<svg" in render_dot(to_dot(model, direction), "svg")


# -- Mermaid ----------------------------------------------------------------


def mermaid_links(text: str) -> list[tuple[str, str, str, str | None]]:
    """The visible links of Mermaid flowchart text: (source id, arrow, dest id, label)."""
    found = re.findall(r'^    (\w+) (==>|-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$', text, re.M)
    return [(a, arrow, b, label or None) for a, arrow, label, b in found]


def test_mermaid_flowchart() -> None:
    """The Mermaid text starts with its front matter, then a ``flowchart``; each
    state is a node under an ASCII id, titled by its name, with the model's
    details; one link per possible transition, labelled with the model's label
    (a retry loop with none), drawn thick (forward, compensation), dotted
    (failure, retry, "go on") or plain; terminals are stadiums; each state has a
    class, a step without compensation its own."""
    model = model_of(OrderSaga)
    text = to_mermaid(model)
    ids = node_ids(model)
    lines = text.splitlines()
    assert lines[:4] == ["---", 'title: "order@v1"', "---", "flowchart RL"]
    assert f'    {ids["create_order"]}["<b>create_order</b><br/><small>step 1</small>"]' in lines
    assert (
        f'    {ids["confirm_order"]}["<b>confirm_order</b><br/><small>step 4</small>'
        '<br/><small><i>no compensation</i></small>"]'
    ) in lines
    assert f'    {ids["failed"]}(["failed"])' in lines
    links = mermaid_links(text)
    assert len(links) == 1 + sum(1 for e in model.edges if e.possible)  # + the start link
    by_ids = {(a, b, label): arrow for a, arrow, b, label in links}
    for e in model.drawn_edges:
        label = None if e.kind == "retry" else e.label
        assert (ids[e.source], ids[e.dest], label) in by_ids, e
    assert by_ids[(ids["create_order"], ids["charge_payment"], None)] == "==>"
    assert by_ids[(ids["refund_payment"], ids["cancel_order"], None)] == "==>"
    assert by_ids[(ids["reserve_inventory"], ids["refund_payment"], "fail")] == "-.->"
    assert by_ids[(ids["charge_payment"], ids["charge_payment"], None)] == "-.->"
    assert by_ids[(ids["cancel_order"], ids["failed"], "all undone")] == "-->"
    assert f"    class {ids['confirm_order']} nocomp" in lines
    assert f"    class {ids['completed']} completed" in lines
    assert "flowchart BT" in to_mermaid(model, "TB")


def test_mermaid_links_of_each_kind_look_different() -> None:
    """Forward, failure, compensation, retry and "go on" links each get a
    ``linkStyle`` of their own (colour, width, dashes), in the palette's
    colours; the numbers it styles are the links', invisible ones counted."""
    model = model_of(TripSaga)
    text = to_mermaid(model)
    ids = node_ids(model)
    statements = [
        ln.strip() for ln in text.splitlines() if re.match(r"    \w+ (~~~|==>|-->|-\.->)", ln)
    ]
    styles = {}
    for ln in text.splitlines():
        if ln.startswith("    linkStyle "):
            _, numbers, css = ln.strip().split(" ", 2)
            for i in numbers.split(","):
                styles[statements[int(i)]] = css
    assert all("~~~" in st for st in statements if st not in styles)

    def style(a: str, arrow: str, b: str, label: str | None = None) -> str:
        text = f'|"{label}"|' if label else ""
        return styles[f"{ids[a]} {arrow}{text} {ids[b]}"]

    kinds = {
        "forward": style("book_flight", "==>", "book_hotel"),
        "fail": style("book_hotel", "-.->", "cancel_flight", "fail"),
        "compensation": style("cancel_hotel", "==>", "cancel_flight"),
        "retry": style("cancel_hotel", "-.->", "cancel_hotel"),
        "go on": style("cancel_hotel", "-.->", "cancel_flight", "fail, go on"),
    }
    assert len(set(kinds.values())) == len(kinds)
    assert dot_module.BLUE in kinds["forward"] and dot_module.ORANGE in kinds["compensation"]
    assert dot_module.RED in kinds["fail"] and dot_module.DARK_RED in kinds["go on"]
    assert all("dasharray" in kinds[k] for k in ("fail", "retry", "go on"))


def test_mermaid_ids_are_safe_for_any_name() -> None:
    """A state's Mermaid id is ASCII letters, digits and ``_``, after a prefix
    of its kind, whatever its name: accents dropped, other scripts spelt out,
    clashes numbered; the name itself is the label."""

    class Hostile(Saga):
        name = "hostile"

        @step
        def réserver(self, ctx: Any) -> None: ...

        @réserver.compensate
        def 取消(self, ctx: Any, result: Any) -> None: ...

        @step
        def reserver(self, ctx: Any) -> None: ...

        @reserver.compensate
        def end(self, ctx: Any, result: Any) -> None: ...

        @step
        def classDef(self, ctx: Any) -> None: ...

    model = model_of(Hostile)
    ids = node_ids(model)
    assert ids["réserver"] == "s_reserver" and ids["reserver"] == "s_reserver_2"
    assert ids["取消"] == "c_x53d6x6d88" and ids["end"] == "c_end"
    assert ids["classDef"] == "s_classDef" and ids["completed"] == "t_completed"
    text = to_mermaid(model)
    assert '    c_x53d6x6d88["<b>取消</b><br/><small>undoes réserver</small>"]' in text
    assert "    class s_reserver,s_reserver_2 step" in text


def test_mermaid_overlay_labels_path_numbers_and_escapes_text(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """In an overlay, taken transitions are labelled with their numbers (a
    retry loop's go into its state), states with what became of them, in the
    model's words, and error text cannot break the syntax."""
    services.fail("payments.charge", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-8", 1.0), saga_id="o-8")
    model = overlay_of(order_engine, "o-8")
    text = to_mermaid(model)
    ids = node_ids(model)
    links = {(a, b): label for a, _, b, label in mermaid_links(text)}
    assert links[(ids["charge_payment"], ids["cancel_order"])] == "#35;4 fail"
    assert links[(ids["create_order"], ids["charge_payment"])] == "#35;1"
    assert links[(ids["charge_payment"], ids["charge_payment"])] is None
    charge = next(ln for ln in text.splitlines() if ln.startswith(f"    {ids['charge_payment']}["))
    assert "<b>failed after 3 attempts</b>" in charge and "#35;2 #35;3 retry" in charge
    assert f"    class {ids['charge_payment']} o_failed" in text
    never = next(ln.split()[1] for ln in text.splitlines() if ln.endswith(" o_none"))
    assert {ids[n] for n in ("confirm_order", "release_reservation", "refund_payment")} <= set(
        never.split(",")
    )
    assert 'title: "order@v1 · saga o-8: failed after' in text
    evil = model.with_path(
        [
            LogEntry(1, "create_order", EntryStatus.EXECUTING, 1, None, None, AT),
            LogEntry(2, "create_order", EntryStatus.FAILED, 1, None, 'x; y #z {"<b>"}`', AT),
        ],
        saga_id="evil",
    )
    line = next(
        ln for ln in to_mermaid(evil).splitlines() if ln.startswith(f"    {ids['create_order']}[")
    )
    error = line.split("<small><i>")[-1].split("</i></small>")[0]
    assert error == "x; y #35;z {#34;#60;b#62;#34;}#96;"


def test_dot_and_mermaid_say_the_same_words(
    order_engine: SagaEngine, services: FakeServices
) -> None:
    """Both renderers print the model's words: each state's details and, in an
    overlay, what became of it; each transition's label (Mermaid's retry loops
    excepted, whose state says it)."""
    services.fail("inventory.reserve", times=1)
    services.fail("payments.refund", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-11", 1.0), saga_id="o-11")
    for model in (model_of(OrderSaga), overlay_of(order_engine, "o-11")):
        dot, mermaid = to_dot(model), to_mermaid(model)
        states = [n for n in model.nodes if n.kind != "terminal"]
        words = [w for n in states for w in (*n.details, n.outcome_text or "") if w]
        words += [e.label for e in model.drawn_edges if e.label and e.kind != "retry"]
        for w in words:
            assert w in dot and w in mermaid, w
    assert "completed, undo failed" in to_mermaid(overlay_of(order_engine, "o-11"))


# -- rendering ----------------------------------------------------------------


def test_svg_and_png_render_in_process() -> None:
    """pygraphviz renders SVG and PNG without a ``dot`` binary; the SVG names
    every state, and rendering twice gives the same bytes."""
    model = model_of(OrderSaga)
    svg = render(model, "svg", renderer="pygraphviz")
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    for n in model.nodes:
        assert f"<title>{n.id}</title>".encode() in svg
    assert svg == render(model, "svg", renderer="pygraphviz")
    assert render(model, "png", renderer="pygraphviz").startswith(b"\x89PNG")


def test_write_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    """``write`` reads the format off the file name and writes each kind."""
    model = model_of(TripSaga)
    assert write(model, tmp_path / "t.dot").read_text() == to_dot(model)
    assert write(model, tmp_path / "t.mmd").read_text() == to_mermaid(model)
    assert write(model, tmp_path / "t.svg").read_bytes().startswith(b"<?xml")
    with pytest.raises(ValueError, match="suffix"):
        write(model, tmp_path / "t.jpeg")


def test_without_any_graphviz_the_error_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pygraphviz not importable and no ``dot`` on PATH, rendering raises a
    RenderError saying how to install one, and ``write`` leaves the DOT source
    beside the file asked for."""
    monkeypatch.setitem(sys.modules, "pygraphviz", None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    model = model_of(OrderSaga)
    with pytest.raises(RenderError) as info:
        write(model, tmp_path / "order.svg")
    message = str(info.value)
    assert "pip install pygraphviz" in message and "no `dot` binary on PATH" in message
    assert info.value.dot_path == tmp_path / "order.dot"
    assert (tmp_path / "order.dot").read_text() == to_dot(model)
    assert not (tmp_path / "order.svg").exists()


def test_malformed_dot_is_an_error_not_a_silent_drop() -> None:
    """In-process Graphviz reports a bad HTML label on stderr and carries on;
    the renderer turns that into a DotError."""
    with pytest.raises(DotError, match="syntax error"):
        render_dot('digraph { label=<<font color="red"></font>>; a -> b }')


# -- the CLI and the diagrams/ folder ----------------------------------------


def test_cli_diagram_of_a_definition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``statesaga diagram MODULE:Class`` prints DOT or Mermaid, writes files in
    the format of their suffix, and rejects what is not a saga class."""
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    result = runner.invoke(main, ["diagram", "definitions.order:OrderSaga"])
    assert result.exit_code == 0, result.output
    assert result.stdout == to_dot(model_of(OrderSaga))
    result = runner.invoke(main, ["diagram", "definitions.order:OrderSaga", "-f", "mermaid"])
    assert result.stdout == to_mermaid(model_of(OrderSaga))
    out = tmp_path / "order.svg"
    result = runner.invoke(main, ["diagram", "definitions.order:OrderSaga", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"<?xml")
    result = runner.invoke(
        main, ["diagram", "definitions.trip:TripSaga", "-o", str(tmp_path / "t.x"), "-f", "png"]
    )
    assert (tmp_path / "t.x").read_bytes().startswith(b"\x89PNG")
    for bad in ("definitions.order", "definitions.order:OrderRequest", "nowhere:X"):
        result = runner.invoke(main, ["diagram", bad])
        assert result.exit_code != 0
    assert runner.invoke(main, ["diagram"]).exit_code == 2
    assert runner.invoke(main, ["diagram", "--saga", "x"]).exit_code == 2


def test_cli_diagram_of_a_stored_saga(
    order_engine: SagaEngine,
    services: FakeServices,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``statesaga diagram --saga ID --db URL`` finds the definition in
    ``definitions`` and draws the saga's path; unknown ids are clear errors."""
    services.fail("inventory.reserve", times=None)
    order_engine.run(OrderSaga, OrderRequest("c-9", 2.0), saga_id="o-9")
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    out = tmp_path / "o-9.mmd"
    result = runner.invoke(main, ["diagram", "--saga", "o-9", "--db", db_url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == to_mermaid(overlay_of(order_engine, "o-9"))
    svg = tmp_path / "o-9.svg"
    result = runner.invoke(main, ["diagram", "--saga", "o-9", "--db", db_url, "-o", str(svg)])
    assert result.exit_code == 0, result.output
    assert b'font-weight="bold" font-size="14.00">o&#45;9</text>' in svg.read_bytes()
    result = runner.invoke(main, ["diagram", "--saga", "nope", "--db", db_url])
    assert result.exit_code == 3  # not found
    assert "no saga with id 'nope'" in result.output
    result = runner.invoke(
        main, ["diagram", "definitions.trip:TripSaga", "--saga", "o-9", "--db", db_url]
    )
    assert result.exit_code == 3  # its definition is not found
    assert "order v1" in result.output


def test_cli_diagrams_regenerates_and_checks_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``statesaga diagrams`` writes every saga's DOT, Mermaid and SVG, and an
    example run of each; ``--check`` passes on what it wrote, and fails listing
    each file changed, missing or left over, which a new run repairs."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "diagrams"
    runner = CliRunner()
    result = runner.invoke(main, ["diagrams", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for saga in find_sagas("definitions"):
        stem = f"{saga.spec.name}-v{saga.spec.version}"
        for suffix in (".dot", ".mmd", ".svg"):
            assert (out / f"{stem}{suffix}").is_file()
            assert (out / f"{stem}-example-run{suffix}").is_file()
    assert runner.invoke(main, ["diagrams", "--out", str(out), "--check"]).exit_code == 0
    again = runner.invoke(main, ["diagrams", "--out", str(out)])
    assert "already up to date" in again.output

    (out / "order-v1.mmd").write_text("%% generated by `statesaga diagrams`\nstale\n")
    (out / "trip-v1.svg").unlink()
    (out / "gone-v1.dot").write_text("// generated by `statesaga diagrams`\ndigraph {}\n")
    (out / "notes.md").write_text("mine\n")
    result = runner.invoke(main, ["diagrams", "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert "order-v1.mmd: differs" in result.output
    assert "trip-v1.svg: missing" in result.output
    assert "gone-v1.dot: left over" in result.output
    assert "notes.md" not in result.output
    result = runner.invoke(main, ["diagrams", "--out", str(out)])
    assert "removed" in result.output and not (out / "gone-v1.dot").exists()
    assert (out / "notes.md").exists()
    assert runner.invoke(main, ["diagrams", "--out", str(out), "--check"]).exit_code == 0


def test_an_svg_drawn_from_other_dot_is_stale(tmp_path: Path) -> None:
    """The check tells an SVG by the digest of the DOT it was drawn from: an SVG
    rendered from other DOT is stale even if the DOT file is current."""
    generate([OrderSaga], tmp_path)
    svg = tmp_path / "order-v1.svg"
    svg.write_bytes(render_dot(to_dot(model_of(TripSaga)), "svg"))
    stale = generate([OrderSaga], tmp_path, check=True).stale
    assert stale == [(svg, "drawn from other DOT source")]


def test_generated_output_is_byte_stable(tmp_path: Path) -> None:
    """Two generations, the second forced to render every SVG again, write the
    same bytes: no times, no random ids, a stable order."""
    generate(SAGAS, tmp_path / "a")
    generate(SAGAS, tmp_path / "b", force=True)
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    b = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert a == b


def test_committed_diagrams_are_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``diagrams/`` folder matches what ``statesaga diagrams`` would write
    for ``definitions/``; if this fails, run ``statesaga diagrams`` and commit."""
    monkeypatch.chdir(ROOT)
    report = generate(find_sagas("definitions"), ROOT / "diagrams", check=True)
    assert report.stale == []


def test_committed_mermaid_starts_with_its_front_matter() -> None:
    """Mermaid reads front matter only at the very start of the text, so the
    generated-file mark comes after it, in each committed ``.mmd``."""
    files = sorted((ROOT / "diagrams").glob("*.mmd"))
    assert files
    for f in files:
        lines = f.read_text().splitlines()
        assert lines[0] == "---" and lines[2] == "---", f.name
        assert lines[3] == "%% generated by `statesaga diagrams`", f.name


def test_readme_shows_the_order_saga_in_mermaid() -> None:
    """The README's Mermaid block, which GitHub draws, is the order saga's
    current Mermaid text."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", readme, re.S)
    assert blocks == [to_mermaid(model_of(OrderSaga))]


def test_history_mismatch_is_statesagas_own() -> None:
    """``statesaga.diagrams.HistoryMismatch`` (importable from there, though not in
    its ``__all__``, which tests/test_public_api.py pins) is the error the journal
    raises, so one ``except`` catches it wherever it comes from."""
    import statesaga
    import statesaga.diagrams as diagrams

    assert diagrams.HistoryMismatch is statesaga.HistoryMismatch
    assert "HistoryMismatch" not in diagrams.__all__


def _dagre_reversed(text: str) -> set[tuple[str, str]]:
    """The links (tail, head) that dagre's depth-first walk turns round: it
    starts at each state in the order first declared, follows each state's
    links in the order written, and reverses a link back to a state still on
    its walk (self loops aside)."""
    order: list[str] = []
    for ln in text.splitlines():
        found = re.match(r"    (\w+)[\[({]", ln)
        if found and found[1] not in order:
            order.append(found[1])
    out: dict[str, list[str]] = {}
    for a, b in re.findall(r"^    (\w+) (?:~~~|==>|-->|-\.->)(?:\|[^|]*\|)? (\w+)$", text, re.M):
        if a != b:
            out.setdefault(a, []).append(b)
    reversed_: set[tuple[str, str]] = set()
    visited: set[str] = set()
    stack: set[str] = set()

    def walk(v: str) -> None:
        visited.add(v)
        stack.add(v)
        for w in out.get(v, []):
            if w in stack:
                reversed_.add((v, w))
            elif w not in visited:
                walk(w)
        stack.discard(v)

    for v in order:
        if v not in visited:
            walk(v)
    return reversed_


@pytest.mark.parametrize("saga", [OrderSaga, TripSaga])
def test_mermaid_rows_forward_path_over_the_chain(saga: type[Saga]) -> None:
    """The rows are laid out as designed: the compensation chain is a subgraph
    declared first (its first compensation first), the forward path a subgraph
    of ``completed``, the start marker and the steps; and dagre's walk turns
    round exactly the forward links and the operator's retry, so the forward
    path runs left to right while the chain and every link down into it run
    right to left (``RL``) with the ranks, each compensation left of the step it
    undoes."""
    model = model_of(saga)
    text = to_mermaid(model)
    ids = node_ids(model)
    lines = text.splitlines()
    chain = lines.index('    subgraph chain [" "]')
    forward = lines.index('    subgraph forward [" "]')
    assert chain < forward
    members = [ln.split("[")[0].split("(")[0].strip() for ln in lines[chain + 1 : forward - 1]]
    assert members == [
        *(ids[n.id] for n in model.compensations),
        *(ids[t.id] for t in model.terminals if t.id != "completed"),
    ]
    members = [ln.split("[")[0].split("(")[0].strip() for ln in lines[forward + 1 :]]
    assert members[: len(model.steps) + 2] == [
        ids["completed"],
        "i_start",
        *(ids[n.id] for n in model.steps),
    ]
    path = ["i_start", *(ids[s] for s in model.forward_path)]
    forward_links = set(itertools.pairwise(path))
    retry = {(ids[e.source], ids[e.dest]) for e in model.drawn_edges if e.kind == "redo"}
    assert retry
    assert _dagre_reversed(text) == forward_links | retry
