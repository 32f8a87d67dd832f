"""The inbox: a participant processes each event once, however often it is delivered.

``Inbox.deliver`` runs in one database transaction: record the event's id as
processed by this participant (``ON CONFLICT DO NOTHING``: a duplicate records
nothing and stops there), run the handler, whose writes go through
``ctx.connection`` and whose events go to the outbox on the same connection,
then commit. Only after the commit may the broker's message be acknowledged.
A crash before the commit leaves nothing behind and the broker delivers the
message again; a crash after it, before the acknowledgement, makes the next
delivery a duplicate, which is dropped. Effects in the database happen exactly
once; a handler's calls to other systems happen at least once (pass
``ctx.event.id`` to them as an idempotency key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy.engine import Connection, Engine

from statesaga._errors import InvalidEvent
from statesaga.choreography._participant import Event, HandlerSpec, Participant, publish
from statesaga.store._connect import make_engine
from statesaga.store._outbox import OutboxRow, OutboxStore

if TYPE_CHECKING:
    from statesaga._engine import SagaEngine


@attrs.define
class EventContext:
    """What a handler is given.

    Attributes:
        event: the event being handled.
        connection: the transaction that records the event as processed: the
            handler's writes through it commit with that record, or not at all.
        participant: the handling participant's name.
    """

    event: Event
    connection: Connection
    participant: str
    _handler: HandlerSpec = attrs.field(repr=False)
    published: list[Event] = attrs.field(factory=list, repr=False)

    def publish(self, name: str, payload: Any = None, *, key: str | None = None) -> Event:
        """Publish ``name`` as this handler's outcome, in the handler's transaction.

        Args:
            name: one of the events the handler declares (``emits`` or ``failures``).
            payload: plain JSON data.
            key: what it is about; by default the handled event's key, so that
                the whole flow of one order (say) stays in order.

        Raises:
            InvalidEvent: the handler did not declare ``name``, or the event is
                malformed; nothing was written.
        """
        if name not in self._handler.may_publish:
            declared = ", ".join(self._handler.may_publish) or "nothing"
            raise InvalidEvent(
                name,
                f"{self.participant}.{self._handler.method} does not declare that it emits "
                f"it (it declares: {declared}); add it to its @handles(emits=...)",
            )
        event = publish(
            self.connection,
            name,
            payload,
            key=self.event.key if key is None else key,
            source=self.participant,
            cause=self.event.id,
        )
        self.published.append(event)
        return event


def engine_of(db: SagaEngine | Engine | str) -> Engine:
    """The SQLAlchemy engine of a ``SagaEngine``, an ``Engine``, or a URL."""
    if isinstance(db, str):
        return make_engine(db)
    if isinstance(db, Engine):
        return db
    return db.store.engine


def event_of(row: OutboxRow) -> Event:
    """The event an outbox row holds."""
    return Event(
        row.event_id,
        row.name,
        row.key,
        json.loads(row.payload),
        row.source,
        row.cause,
        row.position,
    )


class Inbox:
    """Processes events for one participant, each once.

    Args:
        db: statesaga's database: a ``SagaEngine``, an SQLAlchemy ``Engine`` or
            a URL. The participant's own tables live there too, so that its
            writes commit with the inbox record.
        participant: the participant whose handlers run.
        clock: the time source, for the inbox's records.
    """

    def __init__(
        self,
        db: SagaEngine | Engine | str,
        participant: Participant,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(participant, Participant):
            raise TypeError(
                f"Inbox needs a Participant instance, got {type(participant).__qualname__}"
            )
        self.engine = engine_of(db)
        self.participant = participant
        self.store = OutboxStore(self.engine)
        self.store.ensure_schema()
        self._clock = clock

    def __repr__(self) -> str:
        return f"<Inbox of {self.participant.name!r}>"

    @property
    def events(self) -> tuple[str, ...]:
        """The events the participant handles."""
        return tuple(self.participant.handlers)

    def deliver(self, event: Event) -> bool:
        """Process ``event``: record it, run its handler, commit, in one transaction.

        Returns:
            ``True`` if the handler ran and its effects committed; ``False`` if
            the event was processed before (a duplicate) or the participant
            does not handle it (nothing was written).

        Raises:
            Exception: whatever the handler raised; its transaction was rolled
                back (nothing recorded), so a later delivery runs it again.
        """
        spec = self.participant.handlers.get(event.name)
        if spec is None:
            return False
        handler = getattr(self.participant, spec.method)
        name = self.participant.name
        with self.engine.begin() as conn:
            if not self.store.mark_processed(conn, name, event.id, event.name, self._clock()):
                return False
            handler(EventContext(event, conn, name, spec))
        return True

    def processed(self) -> list[str]:
        """The ids of the events this participant has processed, sorted."""
        return self.store.processed(self.participant.name)
