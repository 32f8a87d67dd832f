"""RabbitMQ, through pika (``pip install 'statesaga[rabbitmq]'``).

Why RabbitMQ: it is the message broker Python services reach for most for this
job (Celery's default broker): per-message acknowledgements, redelivery of what
a dead consumer had not acknowledged, publisher confirms, and routing by event
name. Why pika: it is the client RabbitMQ's own tutorials use, pure Python and
synchronous like the rest of statesaga's runners.

The layout, under a ``prefix`` (default ``statesaga``):

- one durable topic exchange ``PREFIX.events``; each event is published to it
  persistent, with its name as routing key and its id as ``message_id``;
- one durable queue ``PREFIX.PARTICIPANT`` per participant, bound to the events
  it handles, dead-lettering into ``PREFIX.dead`` (a direct exchange) and from
  there into ``PREFIX.PARTICIPANT.dead``.

Publishing waits for the broker's confirmation of each message (publisher
confirms), so the relay marks published only what RabbitMQ has taken. A
consumer reads with manual acknowledgement: RabbitMQ gives back, in order, what
a consumer that died had not acknowledged.

Each adapter object holds one connection per thread that uses it (pika's
connections are not thread-safe).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from statesaga._errors import BrokerError
from statesaga.choreography._broker import Delivery, Subscription
from statesaga.choreography._participant import Event

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _pika() -> Any:
    try:
        import pika
    except ImportError:  # pragma: no cover - the extra is installed in dev and CI
        raise ImportError(
            "the RabbitMQ adapter needs pika: pip install 'statesaga[rabbitmq]'"
        ) from None
    return pika


class RabbitMQ:
    """The RabbitMQ broker adapter.

    Args:
        url: an AMQP URL (``amqp://user:password@host:5672/vhost``).
        prefix: names the exchange and queues, so that several applications
            (or tests) can share one broker.
        prefetch: deliveries a consumer holds unacknowledged at once.
        timeout: seconds to wait for the broker to answer a connection attempt.

    Raises:
        ImportError: pika is not installed (the message says how to get it).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = "statesaga",
        prefetch: int = 50,
        timeout: float = 10.0,
    ) -> None:
        pika = _pika()
        self.url = url
        self.prefix = prefix
        self.exchange = f"{prefix}.events"
        self.dead_exchange = f"{prefix}.dead"
        self.prefetch = prefetch
        self._params = pika.URLParameters(url)
        self._params.socket_timeout = timeout
        self._params.blocked_connection_timeout = timeout
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RabbitMQ {self.shown} prefix={self.prefix!r}>"

    @property
    def shown(self) -> str:
        """The broker's address, without credentials."""
        p = self._params
        return f"amqp://{p.host}:{p.port}/{p.virtual_host}"

    # -- connections ------------------------------------------------------------

    def _connect(self) -> Any:
        pika = _pika()
        try:
            conn = pika.BlockingConnection(self._params)
        except pika.exceptions.AMQPError as exc:
            why = str(exc).strip() or "refused, or no answer"
            raise BrokerError(
                self.shown, f"cannot connect ({type(exc).__name__}: {why}); check that it runs"
            ) from exc
        except OSError as exc:
            raise BrokerError(self.shown, f"cannot connect ({exc})") from exc
        with self._lock:
            self._opened.append(conn)
        return conn

    def _publisher(self) -> Any:
        channel = getattr(self._local, "channel", None)
        if channel is not None and channel.is_open:
            return channel
        conn = self._connect()
        channel = conn.channel()
        channel.confirm_delivery()
        channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
        self._local.channel = channel
        return channel

    def connect(self) -> None:
        """Connect now and declare the exchange (a relay's first send would).

        Raises:
            BrokerError: the broker cannot be reached or refused the login.
        """
        pika = _pika()
        try:
            self._publisher()
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(self.shown, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close every connection the adapter opened."""
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(Exception):  # closing a broken connection
                if conn.is_open:
                    conn.close()
        self._local = threading.local()

    # -- the relay's side ---------------------------------------------------------

    def send(self, events: Sequence[Event]) -> int:
        """Publish ``events`` in order, each confirmed by the broker.

        Returns:
            How many were confirmed, from the first.

        Raises:
            BrokerError: none was (the broker is away, or refused the first).
        """
        pika = _pika()
        sent = 0
        try:
            channel = self._publisher()
            for event in events:
                channel.basic_publish(
                    self.exchange,
                    event.name,
                    json.dumps(event.payload, separators=(",", ":")).encode(),
                    pika.BasicProperties(
                        message_id=event.id,
                        type=event.name,
                        content_type="application/json",
                        delivery_mode=2,
                        headers=_headers(event),
                    ),
                )
                sent += 1
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._local.channel = None
            if sent:
                return sent
            raise BrokerError(
                self.shown, f"publishing failed ({type(exc).__name__}: {exc})"
            ) from exc
        return sent

    # -- the consumer's side --------------------------------------------------------

    def subscribe(self, queue: str, events: Iterable[str]) -> Subscription:
        """Declare the queue ``PREFIX.QUEUE`` (and its dead-letter queue), bound to
        ``events``, and read it."""
        return _RabbitSubscription(self, queue, list(events))

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ name of a participant's queue."""
        return f"{self.prefix}.{queue}"

    def depth(self, queue: str) -> tuple[int, int]:
        """How many messages wait in a participant's queue (ready to deliver), and
        how many consumers read it."""
        conn = self._connect()
        try:
            ok = conn.channel().queue_declare(self.queue_name(queue), passive=True)
            return int(ok.method.message_count), int(ok.method.consumer_count)
        finally:
            conn.close()

    def delete(self, queues: Iterable[str]) -> None:
        """Delete participants' queues (and dead-letter queues) and the exchanges."""
        conn = self._connect()
        try:
            channel = conn.channel()
            for q in queues:
                channel.queue_delete(self.queue_name(q))
                channel.queue_delete(f"{self.queue_name(q)}.dead")
            channel.exchange_delete(self.exchange)
            channel.exchange_delete(self.dead_exchange)
        finally:
            conn.close()


def _headers(event: Event) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if event.key is not None:
        headers["key"] = event.key
    if event.source is not None:
        headers["source"] = event.source
    if event.cause is not None:
        headers["cause"] = event.cause
    if event.position is not None:
        headers["position"] = event.position
    return headers


class _RabbitSubscription:
    def __init__(self, broker: RabbitMQ, queue: str, events: list[str]) -> None:
        self._broker = broker
        self._queue = broker.queue_name(queue)
        self._events = events
        self._conn: Any = None
        self._channel: Any = None
        self._stream: Any = None
        self._open()

    def _open(self) -> None:
        b = self._broker
        self._conn = b._connect()
        channel = self._conn.channel()
        channel.exchange_declare(b.exchange, exchange_type="topic", durable=True)
        channel.exchange_declare(b.dead_exchange, exchange_type="direct", durable=True)
        dead = f"{self._queue}.dead"
        channel.queue_declare(dead, durable=True)
        channel.queue_bind(dead, b.dead_exchange, routing_key=self._queue)
        channel.queue_declare(
            self._queue,
            durable=True,
            arguments={
                "x-dead-letter-exchange": b.dead_exchange,
                "x-dead-letter-routing-key": self._queue,
            },
        )
        for name in self._events:
            channel.queue_bind(self._queue, b.exchange, routing_key=name)
        channel.basic_qos(prefetch_count=b.prefetch)
        self._channel = channel
        self._stream = None

    def get(self, wait: float) -> Delivery | None:
        if wait <= 0:
            # A synchronous read: an empty answer means the queue is empty now.
            method, props, body = self._channel.basic_get(self._queue, auto_ack=False)
        else:
            if self._stream is None:
                self._stream = self._channel.consume(self._queue, inactivity_timeout=wait)
            method, props, body = next(self._stream)
        if method is None:
            return None
        headers = props.headers or {}
        event = Event(
            str(props.message_id),
            str(props.type or method.routing_key),
            headers.get("key"),
            json.loads(body),
            headers.get("source"),
            headers.get("cause"),
            headers.get("position"),
        )
        return Delivery(event, method.delivery_tag, bool(method.redelivered))

    def ack(self, delivery: Delivery) -> None:
        self._channel.basic_ack(delivery.tag)

    def requeue(self) -> None:
        # Closing the channel gives back every unacknowledged delivery, in order
        # (basic.recover would too, but a consume() stream must be cancelled anyway).
        self.close()
        self._open()

    def dead_letter(self, delivery: Delivery) -> None:
        self._channel.basic_reject(delivery.tag, requeue=False)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._channel = self._stream = None
        if conn is not None and conn.is_open:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()
