"""The choreography's implied flow, drawn from the participants' declarations: the
model says what follows what, the renderers draw it in DOT and Mermaid, one
business key's events (as the outbox and the inboxes hold them) are laid over it,
``statesaga diagram --choreography`` draws both, and the committed drawings in
``diagrams/choreography/`` are up to date."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from definitions.choreography import Inventory, Orders, Payments, example_run
from statesaga import InvalidParticipant
from statesaga.choreography import Consumer, EventContext, MemoryBroker, Participant, Relay, handles
from statesaga.cli import main
from statesaga.diagrams.choreography import (
    choreography_dot,
    choreography_mermaid,
    choreography_model,
    example_in,
    participants_in,
    render_choreography,
    stale,
    trail_model,
)
from statesaga.diagrams.render import render_dot
from statesaga.store import make_engine
from statesaga.store.migrations import upgrade
from tests.test_mermaid_render import MermaidCli, mermaid_cli  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "diagrams" / "choreography"
REGENERATE = (
    "python -m statesaga.diagrams.choreography definitions.choreography "
    "diagrams/choreography order-flow"
)


def test_the_model_is_the_flow_the_declarations_imply() -> None:
    """From the seed's participants: order.created leads to a charge, which may emit
    payment.charged or the failure payment.failed; either failure cancels the
    order, and a cancelled order is refunded; the refund and cancellations are
    compensations; the events nobody handles end the flow."""
    model = choreography_model([Orders, Payments, Inventory], "order-flow")
    assert set(model.after("order.created")) == {"payment.charged", "payment.failed"}
    assert set(model.after("payment.charged")) == {
        "inventory.reserved",
        "inventory.reservation_failed",
    }
    assert model.after("payment.failed") == ("order.cancelled",)
    assert model.after("inventory.reservation_failed") == ("order.cancelled",)
    assert model.after("order.cancelled") == ("payment.refunded",)
    kinds = {n.id: n.kind for n in model.nodes}
    assert kinds["payments.charge"] == "handler"
    assert kinds["payments.refund"] == kinds["orders.cancel_unpaid"] == "compensation"
    assert kinds["orders.*"] == "origin"
    assert kinds["payment.failed"] == kinds["inventory.reservation_failed"] == "failure"
    assert kinds["order.confirmed"] == kinds["payment.refunded"] == "end"
    assert kinds["order.created"] == "event"


def test_an_event_no_participant_emits_is_drawn_as_external() -> None:
    """A handled event that no participant drawn emits comes from outside: it is
    drawn apart (dotted), so a missing participant shows."""

    class Mailer(Participant):
        name = "mailer"

        @handles("user.signed_up")
        def welcome(self, ctx: EventContext) -> None: ...

    model = choreography_model([Mailer])
    assert model.node("user.signed_up").kind == "external"
    assert [(e.source, e.dest, e.kind) for e in model.edges] == [
        ("user.signed_up", "mailer.welcome", "triggers")
    ]


def test_two_participants_with_one_name_are_refused() -> None:
    """Participant names must be unique in a drawing (they name queues and inboxes)."""

    class Other(Participant):
        name = "orders"

    with pytest.raises(InvalidParticipant, match="orders: two participants have this name"):
        choreography_model([Orders, Other])


def test_both_renderings_name_every_handler_and_event_and_graphviz_draws_it() -> None:
    """DOT and Mermaid both carry every participant, handler and event; Graphviz
    lays the DOT out without complaint; Mermaid node ids are ASCII and its class
    names are not Mermaid keywords."""
    model = choreography_model([Orders, Payments, Inventory], "order-flow")
    dot, mmd = choreography_dot(model), choreography_mermaid(model)
    for n in model.nodes:
        assert n.label in dot and n.label in mmd
    svg = render_dot(dot, "svg").decode()
    assert "payment.failed" in svg and "cancel_unreserved" in svg
    ids = re.findall(r"^    (\w+)[\[(]", mmd, re.M)
    assert len(ids) == len(model.nodes) and all(i.isascii() for i in ids)
    assert not re.search(r"classDef (end|class|style|graph)\b", mmd)


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    """An SQLAlchemy engine on the test's database, with statesaga's schema."""
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


SEED = [Orders, Payments, Inventory]


def test_one_keys_events_are_laid_over_the_flow_in_order(db: Engine) -> None:
    """An order that is charged, finds no stock, is cancelled and refunded: its five
    events are numbered in the order written, each drawn from the handler that
    published it to the handlers that processed it; what it never reached (the
    confirmation, the declined payment) is left unmarked."""
    key = example_run(db)
    model = trail_model(db, SEED, key, "order-flow")
    assert model.is_instance and model.key == key
    trail = [(t.number, t.name, t.emitter, t.processed, t.published) for t in model.trail or ()]
    assert trail == [
        (1, "order.created", "orders.*", ("payments.charge",), True),
        (2, "payment.charged", "payments.charge", ("inventory.reserve",), True),
        (
            3,
            "inventory.reservation_failed",
            "inventory.reserve",
            ("orders.cancel_unreserved",),
            True,
        ),
        (4, "order.cancelled", "orders.cancel_unreserved", ("payments.refund",), True),
        (5, "payment.refunded", "payments.refund", (), True),
    ]
    assert model.summary == f"key {key}: 5 events, 5 published, 4 handled"
    unseen = {n.id for n in model.nodes if not n.seen}
    assert unseen == {
        "orders.confirm",
        "orders.cancel_unpaid",
        "inventory.reserved",
        "order.confirmed",
        "payment.failed",
    }
    taken = {(e.source, e.dest): e.taken for e in model.edges if e.taken}
    assert taken[("inventory.reserve", "inventory.reservation_failed")] == (3,)
    assert taken[("order.cancelled", "payments.refund")] == (4,)
    assert ("orders.cancel_unpaid", "order.cancelled") not in taken
    assert choreography_model(SEED).trail is None  # the flow alone has no overlay


class Fussy(Participant):
    """Fails on every ``parcel.sent``."""

    name = "fussy"

    @handles("parcel.sent")
    def take(self, ctx: EventContext) -> None:
        raise RuntimeError("the handler has a bug")


class Post(Participant):
    """Sends parcels."""

    name = "post"
    emits = ("parcel.sent",)


def test_a_dead_letter_and_an_unpublished_event_are_drawn_apart(db: Engine) -> None:
    """An event whose handler kept failing is dead-lettered, and the inbox records
    where: the overlay draws that edge red and says so; an event the relay has not
    sent yet is marked as not published; both renderers say it, Graphviz draws it."""
    broker = MemoryBroker()
    fussy = Consumer(db, Fussy(), broker, max_attempts=2)
    fussy.subscribe()
    with db.begin() as conn:
        Post().publish(conn, "parcel.sent", key="p-1")
    Relay(db, broker).drain()
    fussy.drain()
    assert len(fussy.dead) == 1 and fussy.inbox.processed() == []
    with db.begin() as conn:
        Post().publish(conn, "parcel.sent", key="p-1")
    model = trail_model(db, [Post, Fussy], "p-1")
    assert [(t.number, t.dead, t.waiting, t.published) for t in model.trail or ()] == [
        (1, ("fussy.take",), (), True),
        (2, (), ("fussy.take",), False),
    ]
    (edge,) = [e for e in model.edges if e.dest == "fussy.take"]
    assert edge.dead == (1,) and edge.taken == () and edge.label == "#1 dead-lettered"
    assert model.node("parcel.sent").notes == ("#2 not published yet", "#1 dead-lettered")
    assert "dead-lettered" in (model.summary or "")
    dot, mmd = choreography_dot(model), choreography_mermaid(model)
    assert "#1 dead-lettered" in dot and "k_dead" in mmd
    assert b"dead&#45;lettered" in render_choreography(model, "svg")


def test_statesaga_diagram_draws_the_flow_and_one_keys_events(db: Engine, db_url: str) -> None:
    """``statesaga diagram --choreography MODULE`` draws the flow (any format);
    with ``--db`` and ``--key``, that key's events over it; a key without events
    is said on stderr; --key without --choreography is a usage error."""
    runner = CliRunner()
    flow = runner.invoke(main, ["diagram", "--choreography", "definitions.choreography"])
    assert flow.exit_code == 0, flow.output
    assert "order.created" in flow.output and "key " not in flow.output
    key = example_run(db)
    args = ["diagram", "--choreography", "definitions.choreography", "--db", db_url]
    one = runner.invoke(main, [*args, "--key", key, "--format", "mermaid"])
    assert one.exit_code == 0, one.output
    assert f"key {key}: 5 events" in one.output and "#35;5" in one.output
    none = runner.invoke(main, [*args, "--key", "no-such-order"])
    assert none.exit_code == 0 and "holds no event of key no-such-order" in none.output
    bad = runner.invoke(main, ["diagram", "--key", key])
    assert bad.exit_code == 2 and "add --choreography" in bad.output


def test_the_committed_drawings_are_up_to_date() -> None:
    """diagrams/choreography/order-flow.{dot,mmd,svg} are what the declarations draw
    now, and order-flow-example-run.* what the example's run draws over them (each
    SVG by the digest of its DOT source)."""
    participants = participants_in("definitions.choreography")
    assert {p.name for p in participants} == {"orders", "payments", "inventory"}
    example = example_in("definitions.choreography")
    assert example is not None
    assert stale(participants, FOLDER, "order-flow", example) == [], f"regenerate: {REGENERATE}"


def test_the_module_checks_from_the_command_line() -> None:
    """``python -m statesaga.diagrams.choreography ... --check`` exits 0 when the
    drawings are up to date (CI can run it as it runs ``statesaga diagrams --check``)."""
    done = subprocess.run(
        [*REGENERATE.replace("python", sys.executable, 1).split(), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_mermaid_renders_in_the_real_mermaid(mermaid_cli: MermaidCli) -> None:  # noqa: F811
    """The committed Mermaid, the flow and the example's run, renders in mermaid-cli
    (where .ci/run installs it) and shows every event by name and the run's numbers."""
    flow = (FOLDER / "order-flow.mmd").read_text()
    run = (FOLDER / "order-flow-example-run.mmd").read_text()
    svg, run_svg = mermaid_cli.render([flow, run])
    for event in ("order.created", "payment.failed", "inventory.reservation_failed"):
        assert event in svg and event in run_svg
    assert "#5" in run_svg
    assert "Syntax error" not in svg + run_svg
