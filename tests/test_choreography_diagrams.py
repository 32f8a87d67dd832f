"""The choreography's implied flow, drawn from the participants' declarations: the
model says what follows what, the renderers draw it in DOT and Mermaid, and the
committed drawings in ``diagrams/choreography/`` are up to date."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from definitions.choreography import Inventory, Orders, Payments
from statesaga import InvalidParticipant
from statesaga.choreography import EventContext, Participant, handles
from statesaga.diagrams.choreography import (
    choreography_dot,
    choreography_mermaid,
    choreography_model,
    participants_in,
    stale,
)
from statesaga.diagrams.render import render_dot
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


def test_the_committed_drawings_are_up_to_date() -> None:
    """diagrams/choreography/order-flow.{dot,mmd,svg} are what the declarations draw
    now (the SVG by the digest of its DOT source)."""
    participants = participants_in("definitions.choreography")
    assert {p.name for p in participants} == {"orders", "payments", "inventory"}
    assert stale(participants, FOLDER, "order-flow") == [], f"regenerate: {REGENERATE}"


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
    """The committed Mermaid renders in mermaid-cli (where .ci/run installs it) and
    shows every event by name."""
    text = (FOLDER / "order-flow.mmd").read_text()
    [svg] = mermaid_cli.render([text])
    for event in ("order.created", "payment.failed", "inventory.reservation_failed"):
        assert event in svg
    assert "Syntax error" not in svg
