"""Participants: classes that declare which events they handle and which they emit.

A participant is a service's part in a choreography. Each handler is a method
marked ``@handles(event, emits=..., failures=..., compensates=...)``; what a
participant publishes outside its handlers (from a request, say) is its class
attribute ``emits``. The declaration is checked when the class is created, and
enforced when events are published: a participant cannot publish an event it
did not declare, so the flow drawn from the declarations
(``statesaga.diagrams.choreography``) is the flow that runs.
"""

from __future__ import annotations

import inspect
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
from sqlalchemy.engine import Connection

from statesaga._errors import InvalidEvent, InvalidParticipant
from statesaga.store._outbox import DEAD, NewEvent, append

#: An event name: dot-separated words of letters, digits, ``_`` and ``-``
#: (``order.created``); no wildcard, so that it routes as itself.
EVENT_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
#: A participant name: letters, digits, ``_``, ``-`` and ``.``.
PARTICIPANT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: The longest name, key or id the store keeps.
MAX_LENGTH = 200
#: The longest participant name (its dead letters are recorded under ``NAME!dead``).
MAX_PARTICIPANT = MAX_LENGTH - len(DEAD)

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "__statesaga_handles__"


@attrs.frozen
class Event:
    """An event, as published and as delivered.

    Attributes:
        id: unique; consumers drop a second delivery of the same id.
        name: what happened (``order.created``).
        key: what it is about (an order id): one key's events are delivered in
            the order they were published. ``None``: no order kept.
        payload: its data, plain JSON.
        source: the participant that published it, if one did.
        cause: the id of the event whose handling published it, if any.
        position: its place in the outbox (the order events were written in).
    """

    id: str
    name: str
    key: str | None
    payload: Any
    source: str | None = None
    cause: str | None = None
    position: int | None = None


@attrs.frozen
class HandlerSpec:
    """One handler of a participant, as declared.

    Attributes:
        event: the event it handles.
        method: the method's name.
        emits: the events it may publish when it succeeds.
        failures: the events it may publish to say it could not do its part
            (drawn as failures; the flow compensates from there).
        compensates: whether it undoes an earlier effect (drawn as compensation).
    """

    event: str
    method: str
    emits: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    compensates: bool = False

    @property
    def may_publish(self) -> tuple[str, ...]:
        """Every event it may publish."""
        return (*self.emits, *self.failures)


def handles(
    event: str,
    *,
    emits: Iterable[str] = (),
    failures: Iterable[str] = (),
    compensates: bool = False,
) -> Callable[[_F], _F]:
    """Mark a participant's method as the handler of ``event``.

    The method is ``(self, ctx: EventContext) -> None``; it runs in the
    transaction that records the event as processed, with ``ctx.connection``
    for its own writes and ``ctx.publish`` for the events it emits.

    Args:
        event: the name of the event it handles.
        emits: the events it may publish when it succeeds.
        failures: the events it may publish when it cannot do its part.
        compensates: it undoes an earlier effect (a refund, a cancellation).
    """
    spec = (event, tuple(emits), tuple(failures), compensates)

    def mark(func: _F) -> _F:
        setattr(func, _MARK, spec)
        return func

    return mark


class Participant:
    """Base class of a choreography participant.

    Subclasses set ``name`` (stable: it names the consumer's inbox and queue),
    may set ``emits`` (the events published outside handlers), and mark their
    handlers with ``@handles``. The declaration is checked when the class is
    created and raises ``InvalidParticipant`` naming the problem.

    Attributes:
        name: the participant's name.
        emits: events it publishes outside its handlers (``publish``).
        handlers: its handlers, by the event they handle (set at class creation).
    """

    name: ClassVar[str]
    emits: ClassVar[tuple[str, ...]] = ()
    handlers: ClassVar[Mapping[str, HandlerSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        where = cls.__qualname__
        name = cls.__dict__.get("name", getattr(cls, "name", None))
        if not isinstance(name, str) or not PARTICIPANT_NAME.fullmatch(name):
            raise InvalidParticipant(
                where,
                f"its name must be a string of letters, digits, '_', '-' or '.', got {name!r}; "
                'set name = "payments" (say) in the class body',
            )
        if len(name) > MAX_PARTICIPANT:
            raise InvalidParticipant(where, f"its name is longer than {MAX_PARTICIPANT} characters")
        emits = cls.__dict__.get("emits", cls.emits)
        if isinstance(emits, str) or not isinstance(emits, tuple | list):
            raise InvalidParticipant(where, f"emits must be a tuple of event names, got {emits!r}")
        for e in emits:
            _check_name(where, e, "emits")
        cls.emits = tuple(emits)
        handlers: dict[str, HandlerSpec] = {}
        for klass in reversed(cls.__mro__):
            own: dict[str, str] = {}
            for attr, value in vars(klass).items():
                marked = getattr(value, _MARK, None)
                if marked is None:
                    continue  # a plain method overriding a handler keeps its declaration
                event, out, failures, compensates = marked
                _check_name(where, event, f"@handles of {attr}")
                for e in (*out, *failures):
                    _check_name(where, e, f"the events {attr} emits")
                if _positional(value) != 2:
                    raise InvalidParticipant(
                        where,
                        f"handler {attr} must be a method (self, ctx) -> None, "
                        f"got {_signature(value)}",
                    )
                if event in own:
                    raise InvalidParticipant(
                        where,
                        f"{own[event]} and {attr} both handle {event!r}; one handler per event",
                    )
                own[event] = attr
                handlers = {e: h for e, h in handlers.items() if h.method != attr}
                handlers[event] = HandlerSpec(event, attr, tuple(out), tuple(failures), compensates)
        cls.handlers = dict(sorted(handlers.items()))

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} participant {self.name!r}>"

    def publish(
        self, connection: Connection, name: str, payload: Any = None, *, key: str | None = None
    ) -> Event:
        """Publish ``name`` from this participant, in ``connection``'s transaction.

        The event is written to the outbox on ``connection``: it goes out when
        (and only if) that transaction commits, with the state change it
        announces. A relay hands it to the broker.

        Raises:
            InvalidEvent: ``name`` is not among the participant's ``emits``, or
                the event is malformed; nothing was written.
        """
        if name not in self.emits:
            raise InvalidEvent(
                name,
                f"participant {self.name!r} does not declare that it emits it "
                f"(emits: {', '.join(self.emits) or 'nothing'}); add it to its emits",
            )
        return publish(connection, name, payload, key=key, source=self.name)


def _check_name(where: str, name: object, what: str) -> None:
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name) or len(name) > MAX_LENGTH:
        raise InvalidParticipant(
            where,
            f"{what}: {name!r} is not an event name (dot-separated words of letters, "
            f"digits, '_' or '-', at most {MAX_LENGTH} characters, like 'order.created')",
        )


def _positional(func: Any) -> int | None:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind in kinds and p.default is not p.empty for p in params):
        return None
    if any(p.kind not in kinds for p in params):
        return None
    return sum(1 for p in params if p.kind in kinds)


def _signature(func: Any) -> str:
    try:
        return f"{getattr(func, '__name__', func)}{inspect.signature(func)}"
    except (TypeError, ValueError):
        return repr(func)


def publish(
    connection: Connection,
    name: str,
    payload: Any = None,
    *,
    key: str | None = None,
    source: str | None = None,
    cause: str | None = None,
) -> Event:
    """Write an event to the outbox in ``connection``'s transaction.

    Prefer ``Participant.publish`` (it checks the participant's declaration) or,
    in a handler, ``EventContext.publish``.

    Args:
        connection: a connection in a transaction on statesaga's database.
        name: the event's name (``order.created``).
        payload: plain JSON data.
        key: what it is about; one key's events are delivered in order.
        source: the participant publishing it.
        cause: the id of the event being handled, if any.

    Raises:
        InvalidEvent: the name, key or payload is malformed; nothing was written.
    """
    text = _encode(name, payload, key)
    event = Event(uuid.uuid4().hex, name, key, payload, source, cause)
    row: NewEvent = {
        "event_id": event.id,
        "name": name,
        "key": key,
        "payload": text,
        "source": source,
        "cause": cause,
        "created_at": time.time(),
    }
    append(connection, [row])
    return event


def _encode(name: object, payload: Any, key: object) -> str:
    if not isinstance(name, str) or not EVENT_NAME.fullmatch(name) or len(name) > MAX_LENGTH:
        raise InvalidEvent(
            str(name),
            "not an event name: dot-separated words of letters, digits, '_' or '-', "
            f"at most {MAX_LENGTH} characters (like 'order.created')",
        )
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_LENGTH):
        raise InvalidEvent(
            name, f"its key must be a non-empty string of at most {MAX_LENGTH} characters or None"
        )
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(
            name,
            f"its payload ({type(payload).__qualname__}) is not plain JSON ({exc}); "
            "pass dicts, lists, strings, numbers, booleans and None",
        ) from None
