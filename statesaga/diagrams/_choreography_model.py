"""The implied flow of a choreography as plain data, extracted from the declarations.

``ChoreographyModel`` is to a choreography what ``GraphModel`` is to a saga: the
data every renderer reads. ``choreography_model`` extracts it from the
participants' ``@handles`` and ``emits``; ``with_trail`` lays one key's events
over it (read by ``_choreography_overlay``), and ``trail_model`` does both,
straight from the database. Nothing here draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import attrs
from sqlalchemy.engine import Engine

from statesaga._errors import InvalidParticipant
from statesaga.choreography._participant import Participant
from statesaga.diagrams._choreography_overlay import TrailEvent, read_key, read_trail
from statesaga.store._outbox import InboxRow, OutboxRow

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine

NodeKind = Literal["handler", "compensation", "origin", "event", "failure", "end", "external"]
EdgeKind = Literal["emits", "fails", "triggers", "compensates"]


@attrs.frozen
class FlowNode:
    """A handler, a participant's own publishing, or an event.

    Attributes:
        id: unique in the model (``payments.charge``, ``orders.*``, ``order.created``).
        kind: ``handler``, ``compensation`` (a compensating handler), ``origin``
            (what a participant publishes outside handlers), ``event``,
            ``failure`` (an event declared as a failure), ``end`` (an event no
            participant handles) or ``external`` (handled, but emitted by no
            participant drawn).
        label: the text drawn.
        participant: the participant it belongs to (``None`` for events).
        seen: overlay only: the numbers of the key's events it published or
            handled (a handler, an origin) or that carry its name (an event).
        dead: overlay only: the numbers of the events a handler dead-lettered,
            or of an event's occurrences that were dead-lettered somewhere.
        pending: overlay only: an event's occurrences not published yet.
    """

    id: str
    kind: NodeKind
    label: str
    participant: str | None = None
    seen: tuple[int, ...] = ()
    dead: tuple[int, ...] = ()
    pending: tuple[int, ...] = ()

    @property
    def notes(self) -> tuple[str, ...]:
        """Overlay only: what a drawing says under the node's label."""
        lines = []
        done = [n for n in self.seen if n not in self.dead and n not in self.pending]
        if self.participant is None:
            if done:
                lines.append(_numbers(done))
            if self.pending:
                lines.append(f"{_numbers(self.pending)} not published yet")
            if self.dead:
                lines.append(f"{_numbers(self.dead)} dead-lettered")
        else:
            if done:
                lines.append(
                    f"{'published' if self.kind == 'origin' else 'handled'} {_numbers(done)}"
                )
            if self.dead:
                lines.append(f"dead-lettered {_numbers(self.dead)}")
        return tuple(lines)


def _numbers(numbers: Iterable[int]) -> str:
    return ", ".join(f"#{n}" for n in numbers)


@attrs.frozen
class FlowEdge:
    """An arrow: a handler emits an event, or an event triggers a handler.

    Attributes:
        source: the node it leaves.
        dest: the node it enters.
        kind: ``emits``, ``fails`` (emits a failure event), ``triggers`` or
            ``compensates`` (triggers a compensating handler).
        taken: overlay only: the numbers of the key's events that went this way
            (published by the handler, or processed by it).
        dead: overlay only: the numbers of the events that went this way and
            were dead-lettered by the handler.
    """

    source: str
    dest: str
    kind: EdgeKind
    taken: tuple[int, ...] = ()
    dead: tuple[int, ...] = ()

    @property
    def label(self) -> str | None:
        """Overlay only: the numbers drawn on the edge (``None``: none)."""
        parts = []
        if self.taken:
            parts.append(_numbers(self.taken))
        if self.dead:
            parts.append(f"{_numbers(self.dead)} dead-lettered")
        return "; ".join(parts) or None


@attrs.frozen
class ChoreographyModel:
    """The implied flow of a set of participants.

    Attributes:
        name: a title.
        participants: the participants' names, in the order given.
        nodes: handlers and origins (grouped by participant), then events by name.
        edges: in a fixed order (sources' order, then destinations').
        key: overlay only: the business key whose events are laid over the flow.
        trail: overlay only: that key's events, in the order they were written.
    """

    name: str
    participants: tuple[str, ...]
    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]
    key: str | None = None
    trail: tuple[TrailEvent, ...] | None = None

    @property
    def is_instance(self) -> bool:
        """Whether one key's events are laid over the flow."""
        return self.trail is not None

    @property
    def summary(self) -> str | None:
        """Overlay only: ``key K: N events, P published, H handled, D dead-lettered``."""
        if self.trail is None:
            return None
        t = self.trail
        parts = [
            f"{len(t)} events",
            f"{sum(e.published for e in t)} published",
            f"{sum(len(e.processed) for e in t)} handled",
        ]
        if dead := sum(len(e.dead) for e in t):
            parts.append(f"{dead} dead-lettered")
        if waiting := sum(len(e.waiting) for e in t):
            parts.append(f"{waiting} waiting")
        return f"key {self.key}: {', '.join(parts)}"

    def with_trail(
        self, events: Sequence[OutboxRow], handled: Sequence[InboxRow], key: str | None = None
    ) -> ChoreographyModel:
        """This flow with one key's events laid over it.

        Args:
            events: the key's outbox rows (``OutboxStore.events(key=...)``).
            handled: the inbox rows of those events (``OutboxStore.handled``).
            key: the key, for the title.

        Returns:
            A new model whose ``trail`` lists the events in the order they were
            written, and whose nodes and edges carry the numbers of the events
            that went through them. A handler publishing an event is found from
            the event's source and cause; a consumer or event the drawing does
            not have is left out of it.
        """
        part_of = {n.id: n.participant for n in self.nodes}
        triggered: dict[str, list[str]] = {}
        may_emit: dict[tuple[str | None, str], list[str]] = {}
        for e in self.edges:
            if e.kind in ("triggers", "compensates"):
                triggered.setdefault(e.source, []).append(e.dest)
            else:
                may_emit.setdefault((part_of[e.source], e.dest), []).append(e.source)
        trail = read_trail(events, handled, part_of, triggered, may_emit)

        def node(n: FlowNode) -> FlowNode:
            if n.participant is None:
                mine = [t for t in trail if t.name == n.id]
                return attrs.evolve(
                    n,
                    seen=tuple(t.number for t in mine),
                    dead=tuple(t.number for t in mine if t.dead),
                    pending=tuple(t.number for t in mine if not t.published),
                )
            # A handler's numbers are the events it handled (those it published are
            # on its edges); an origin's, the events it published.
            through = (
                (lambda t: n.id == t.emitter)
                if n.kind == "origin"
                else (lambda t: n.id in (*t.processed, *t.dead))
            )
            return attrs.evolve(
                n,
                seen=tuple(t.number for t in trail if through(t)),
                dead=tuple(t.number for t in trail if n.id in t.dead),
            )

        def edge(e: FlowEdge) -> FlowEdge:
            if e.kind in ("triggers", "compensates"):
                mine = [t for t in trail if t.name == e.source]
                return attrs.evolve(
                    e,
                    taken=tuple(t.number for t in mine if e.dest in t.processed),
                    dead=tuple(t.number for t in mine if e.dest in t.dead),
                )
            return attrs.evolve(
                e,
                taken=tuple(t.number for t in trail if t.name == e.dest and t.emitter == e.source),
            )

        return attrs.evolve(
            self,
            nodes=tuple(node(n) for n in self.nodes),
            edges=tuple(edge(e) for e in self.edges),
            key=key,
            trail=trail,
        )

    def node(self, id: str) -> FlowNode:
        """The node ``id``; ``KeyError`` if there is none."""
        for n in self.nodes:
            if n.id == id:
                return n
        raise KeyError(id)

    @property
    def events(self) -> tuple[FlowNode, ...]:
        """The event nodes."""
        return tuple(n for n in self.nodes if n.participant is None)

    def owned_by(self, participant: str) -> tuple[FlowNode, ...]:
        """The handler and origin nodes of ``participant``."""
        return tuple(n for n in self.nodes if n.participant == participant)

    def after(self, event: str) -> tuple[str, ...]:
        """The events that may follow ``event`` directly (through one handler)."""
        handlers = [e.dest for e in self.edges if e.source == event]
        return tuple(e.dest for h in handlers for e in self.edges if e.source == h)


def choreography_model(
    participants: Iterable[type[Participant] | Participant], name: str = "choreography"
) -> ChoreographyModel:
    """The implied flow of ``participants`` (classes or instances).

    Raises:
        InvalidParticipant: two of them share a name.
    """
    classes = [p if isinstance(p, type) else type(p) for p in participants]
    names = [c.name for c in classes]
    for n in names:
        if names.count(n) > 1:
            raise InvalidParticipant(n, "two participants have this name; names must be unique")
    emitted: set[str] = set()
    failures: set[str] = set()
    handled: set[str] = set()
    owned: list[FlowNode] = []
    edges: list[FlowEdge] = []
    for cls in classes:
        if cls.emits:
            origin = f"{cls.name}.*"
            owned.append(FlowNode(origin, "origin", "publishes on its own", cls.name))
            edges += [FlowEdge(origin, e, "emits") for e in cls.emits]
            emitted.update(cls.emits)
        for event, h in cls.handlers.items():
            hid = f"{cls.name}.{h.method}"
            kind: NodeKind = "compensation" if h.compensates else "handler"
            owned.append(FlowNode(hid, kind, h.method, cls.name))
            edges.append(FlowEdge(event, hid, "compensates" if h.compensates else "triggers"))
            edges += [FlowEdge(hid, e, "emits") for e in h.emits]
            edges += [FlowEdge(hid, e, "fails") for e in h.failures]
            emitted.update(h.may_publish)
            failures.update(h.failures)
            handled.add(event)

    def event_kind(e: str) -> NodeKind:
        if e not in emitted:
            return "external"
        if e in failures:
            return "failure"
        return "event" if e in handled else "end"

    events = [FlowNode(e, event_kind(e), e) for e in sorted(emitted | handled)]
    order = {n.id: i for i, n in enumerate([*owned, *events])}
    edges.sort(key=lambda e: (order[e.source], order[e.dest]))
    return ChoreographyModel(name, tuple(names), (*owned, *events), tuple(edges))


def trail_model(
    db: SagaEngine | Engine | str,
    participants: Iterable[type[Participant] | Participant],
    key: str,
    name: str = "choreography",
) -> ChoreographyModel:
    """The flow of ``participants`` with the events of ``key`` laid over it, as the
    outbox and the inboxes of statesaga's database hold them (read only).

    Args:
        db: statesaga's database: a ``SagaEngine``, an SQLAlchemy ``Engine`` or a URL.
        participants: the participants to draw.
        key: the business key (an order id, say).
        name: a title.
    """
    events, handled = read_key(db, key)
    return choreography_model(participants, name).with_trail(events, handled, key)
