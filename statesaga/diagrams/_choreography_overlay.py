"""One business key's events, as the outbox and the inboxes hold them, read as a trail.

The choreography's counterpart of ``overlay`` (a saga log read through the
machine): this module knows the rows, not the drawing. It is given the few
facts of the flow it needs (which participant owns each node, which handlers
an event triggers, which nodes of a participant may emit an event) as plain
mappings, so it imports nothing of the model; the model lays the trail it
returns over its nodes and edges (``ChoreographyModel.with_trail``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
from sqlalchemy.engine import Engine

from statesaga.choreography._inbox import engine_of
from statesaga.store._outbox import InboxRow, OutboxRow, OutboxStore

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine


@attrs.frozen
class TrailEvent:
    """One event of a key, in an overlay.

    Attributes:
        number: its place among the key's events, from 1, in the order written.
        id: the event's id.
        name: the event's name.
        source: the participant that published it, if one did.
        emitter: the node that published it (a handler or an origin), if the
            drawing has it.
        published: whether the relay has handed it to the broker.
        processed: the handler nodes that processed it, in the order they did.
        dead: the handler nodes that dead-lettered it.
        waiting: the handler nodes that handle it and have done neither yet.
    """

    number: int
    id: str
    name: str
    source: str | None
    emitter: str | None
    published: bool
    processed: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    waiting: tuple[str, ...] = ()


def read_trail(
    events: Sequence[OutboxRow],
    handled: Sequence[InboxRow],
    part_of: Mapping[str, str | None],
    triggered: Mapping[str, Sequence[str]],
    may_emit: Mapping[tuple[str | None, str], Sequence[str]],
) -> tuple[TrailEvent, ...]:
    """The key's events in the order they were written, each with the nodes it went
    through.

    Args:
        events: the key's outbox rows.
        handled: the inbox rows of those events.
        part_of: every node of the flow, with the participant it belongs to
            (``None`` for an event).
        triggered: by event, the handler nodes it triggers.
        may_emit: by participant and event, the participant's nodes that may emit it.

    Returns:
        The trail; a consumer or an emitter the flow does not have is left out.
    """
    rows = sorted(events, key=lambda r: r.position)
    names = {r.event_id: r.name for r in rows}
    by_event: dict[str, list[InboxRow]] = {}
    for h in handled:
        by_event.setdefault(h.event_id, []).append(h)
    trail = []
    for number, r in enumerate(rows, 1):
        handlers = triggered.get(r.name, [])
        done = {h.consumer for h in by_event.get(r.event_id, ()) if not h.dead}
        dead = {h.consumer for h in by_event.get(r.event_id, ()) if h.dead}
        order = [h.consumer for h in by_event.get(r.event_id, ()) if not h.dead]
        trail.append(
            TrailEvent(
                number,
                r.event_id,
                r.name,
                r.source,
                _emitter(r, names.get(r.cause or ""), part_of, may_emit, triggered),
                r.published_at is not None,
                tuple(h for c in order for h in handlers if part_of[h] == c and c in done),
                tuple(h for h in handlers if part_of[h] in dead),
                tuple(h for h in handlers if part_of[h] not in done | dead),
            )
        )
    return tuple(trail)


def _emitter(
    row: OutboxRow,
    cause: str | None,
    part_of: Mapping[str, str | None],
    may_emit: Mapping[tuple[str | None, str], Sequence[str]],
    triggered: Mapping[str, Sequence[str]],
) -> str | None:
    """The node that published ``row``: its source's origin if no event caused
    it, else the source's handler of the cause that may emit it."""
    if row.source is None:
        return None
    if row.cause is None:
        origin = f"{row.source}.*"
        return origin if origin in part_of else None
    candidates = may_emit.get((row.source, row.name), [])
    if cause is not None:
        candidates = [h for h in candidates if h in triggered.get(cause, [])]
    return candidates[0] if len(candidates) == 1 else None


def read_key(db: SagaEngine | Engine | str, key: str) -> tuple[list[OutboxRow], list[InboxRow]]:
    """The outbox rows of ``key`` and their inbox rows, from statesaga's database
    (read only; an engine made from a URL is disposed of)."""
    engine = engine_of(db)
    store = OutboxStore(engine)
    try:
        events = store.events(key=key)
        handled = store.handled([e.event_id for e in events])
    finally:
        if isinstance(db, str):
            engine.dispose()
    return events, handled
