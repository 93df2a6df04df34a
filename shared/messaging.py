"""Publishing and consuming events on aio-pika, with the delivery rules of the contract.

Publishing: persistent messages, publisher confirms, a timeout.
Consuming: prefetch, manual ack only after the handler has stored its effect; a body that does
not parse is rejected to the dead-letter queue; a handler failure requeues it (the queue's
delivery limit dead-letters it eventually). An outage of what the handler needs (the database,
the broker, auth) is no failure of the message: the handler is run again with backoff while the
message is held, so that an outage cannot use up the delivery limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from shared.aio import shielded
from shared.errors import ErrorCode, Unavailable
from shared.events import Envelope, Event, encode_event, parse_event
from shared.logs import correlation_id
from shared.mongo import DATABASE_OUTAGES
from shared.topology import Topology, declare_exchange, declare_topology
from shared.tracing import continued_span, current_carrier

log = logging.getLogger(__name__)

# Backoff while a dependency is out: 0.5 s, 1 s, 2 s ... then every 30 s.
OUTAGE_RETRY_FIRST = 0.5
OUTAGE_RETRY_MAX = 30.0

E = TypeVar("E", bound=Envelope)


class DeadLetter(Exception):
    """Raised by a handler for a message that can never succeed: it goes to the dead letters."""


async def connect(url: str, name: str, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust connection that reconnects by itself and restores its channels and consumers.

    Its loss is logged once as a WARNING and its recovery once as INFO; the libraries' own
    records of the same outage (a traceback, then one line per attempt) are dropped.
    """
    _quiet_library_outage_records()
    connection = await aio_pika.connect_robust(
        url, timeout=timeout, client_properties={"connection_name": name}
    )
    outage = _Outage()
    connection.close_callbacks.add(outage.lost)
    connection.reconnect_callbacks.add(outage.recovered)
    return connection


class _Outage:
    def __init__(self) -> None:
        self.since: float | None = None

    def lost(self, connection: AbstractConnection | None, exc: BaseException | None, /) -> None:
        if (connection is not None and connection.close_called) or self.since is not None:
            return
        self.since = time.monotonic()
        reason = _describe(exc) if exc is not None else "closed"
        log.warning("lost the broker (%s); reconnecting", reason)

    def recovered(self, connection: AbstractRobustConnection | None, /) -> None:
        if self.since is None:
            return
        log.info("reconnected to the broker after %.1f s", time.monotonic() - self.since)
        self.since = None


# Records of aio-pika and aiormq that only say, again and in their words, that the broker went
# away or is still away: `_Outage` says it once. Anything else they log stays.
_OUTAGE_RECORDS = {
    "aiormq.connection": (
        "Cancelling cause reader exited abnormally",
        "Unexpected connection close from remote",
        "error when creating transport",
        "Server connection %r was stuck",
    ),
    "aio_pika.robust_connection": ("Connection attempt to ",),
}


class _OutageRecordFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name == "aio_pika.tools":
            # A restored channel's close callback failing on the closed connection.
            args = record.args if isinstance(record.args, tuple) else ()
            return not (message.startswith("Callback ") and args and "_on_close" in repr(args[0]))
        return not message.startswith(_OUTAGE_RECORDS.get(record.name, ()))


def _quiet_library_outage_records() -> None:
    for name in (*_OUTAGE_RECORDS, "aio_pika.tools"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OutageRecordFilter) for f in logger.filters):
            logger.addFilter(_OutageRecordFilter())


class EventPublisher:
    """Publishes events to the topic exchange and waits for the broker's confirm."""

    def __init__(self, exchange: AbstractExchange, timeout: float = 10.0) -> None:
        self._exchange = exchange
        self._timeout = timeout

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, topology: Topology, timeout: float = 10.0
    ) -> EventPublisher:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_topology(channel, topology)
        return cls(exchange, timeout)

    async def publish(self, event: Event) -> None:
        """Publish one event; raises `Unavailable(broker_unavailable)` when it is not confirmed."""
        if not event.trace:
            carrier = current_carrier()
            if carrier:
                event = event.model_copy(update={"trace": carrier})
        message = aio_pika.Message(
            encode_event(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=event.event_id,
            correlation_id=event.correlation_id,
            type=str(event.type),
        )
        try:
            await self._exchange.publish(
                message, routing_key=str(event.type), timeout=self._timeout
            )
        except (
            TimeoutError,
            ConnectionError,
            aio_pika.exceptions.AMQPError,
            # Raised (a RuntimeError, not an AMQPError) while a robust channel is reconnecting.
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            raise Unavailable(
                "the message broker is unavailable", code=ErrorCode.BROKER_UNAVAILABLE
            ) from exc


async def open_consumer_channel(
    connection: AbstractRobustConnection, topology: Topology, prefetch: int
) -> AbstractRobustChannel:
    channel = await connection.channel()
    assert isinstance(channel, AbstractRobustChannel)
    await channel.set_qos(prefetch_count=prefetch)
    await declare_topology(channel, topology)
    return channel


async def handle_delivery(
    message: AbstractIncomingMessage,
    handler: Callable[[E], Awaitable[None]],
    accepts: tuple[type[E], ...],
) -> None:
    """Run `handler` on one delivery and settle it by the contract's rules. A message that is
    not one of the events `accepts` names is dead-lettered here, where it arrived."""
    try:
        parsed = parse_event(message.body)
    except ValidationError as exc:
        log.error("unparseable message %s dead-lettered: %s", message.message_id, exc)
        await message.reject(requeue=False)
        return
    if not isinstance(parsed, accepts):
        log.error(
            "%s %s dead-lettered: this queue takes %s",
            parsed.type,
            parsed.event_id,
            ", ".join(model.__name__ for model in accepts),
        )
        await message.reject(requeue=False)
        return
    event = parsed
    correlation_id.set(event.correlation_id)
    outages = 0
    while True:
        try:
            with continued_span(f"consume {event.type}", event.trace, job_id=event.payload.job_id):
                await handler(event)
        except DeadLetter as exc:
            log.error("%s %s dead-lettered: %s", event.type, event.event_id, exc)
            await message.reject(requeue=False)
            return
        except asyncio.CancelledError:
            # Shutting down mid-message: hand it back so another consumer takes it.
            await shielded(message.nack(requeue=True), "handing a message back")
            raise
        except Exception as exc:
            if is_outage(exc):
                # Held, not requeued: five immediate requeues would dead-letter the message
                # within a second of the database going away (a lost email, a failed job).
                # If this process dies meanwhile, the broker hands the message on.
                delay = min(OUTAGE_RETRY_MAX, OUTAGE_RETRY_FIRST * 2**outages)
                outages += 1
                log.warning(
                    "handling %s %s: %s; trying again in %.1fs",
                    event.type,
                    event.event_id,
                    _describe(exc),
                    delay,
                )
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    await shielded(message.nack(requeue=True), "handing a message back")
                    raise
                continue
            log.exception("handling %s %s failed; requeued", event.type, event.event_id)
            await message.nack(requeue=True)
            return
        break
    await message.ack()


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says a dependency is unavailable rather than that the work itself failed."""
    if isinstance(exc, Unavailable):  # our own 503s: broker, database, auth
        return True
    return isinstance(exc, DATABASE_OUTAGES)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def consume(
    channel: AbstractRobustChannel,
    queue_name: str,
    handler: Callable[[E], Awaitable[None]],
    accepts: tuple[type[E], ...],
    gate: Callable[[AbstractIncomingMessage, E], Awaitable[bool]] | None = None,
) -> tuple[AbstractQueue, str]:
    """Start consuming `queue_name` with `handler`, which takes the events `accepts` names;
    returns the queue and consumer tag (to cancel it).

    `gate`, when given, sees each accepted message first; when it answers True it has dealt
    with the message (e.g. put a copy at the back of the queue) and the delivery is
    acknowledged without running `handler`. It runs under the same outage retries as the
    handler.
    """
    queue = await channel.get_queue(queue_name, ensure=True)

    async def on_message(message: AbstractIncomingMessage) -> None:
        if gate is None:
            await handle_delivery(message, handler, accepts)
            return

        async def gated(event: E) -> None:
            if not await gate(message, event):
                await handler(event)

        await handle_delivery(message, gated, accepts)

    tag = await queue.consume(on_message, no_ack=False)
    return queue, tag


@dataclass
class Consumer:
    """One work queue consumed on a channel of its own, until `stop`."""

    channel: AbstractRobustChannel
    queue: AbstractQueue
    tag: str

    @classmethod
    async def start(
        cls,
        connection: AbstractRobustConnection,
        topology: Topology,
        queue_name: str,
        handler: Callable[[E], Awaitable[None]],
        accepts: tuple[type[E], ...],
        *,
        prefetch: int,
    ) -> Consumer:
        channel = await open_consumer_channel(connection, topology, prefetch)
        queue, tag = await consume(channel, queue_name, handler, accepts)
        return cls(channel, queue, tag)

    async def stop(self) -> None:
        try:
            await self.queue.cancel(self.tag)
        finally:
            await self.channel.close()


async def bind_private_queue(
    channel: AbstractRobustChannel, topology: Topology, routing_keys: list[str]
) -> AbstractQueue:
    """An exclusive, auto-delete queue of one process, bound to the given event types."""
    exchange = await declare_exchange(channel, topology)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    for key in routing_keys:
        await queue.bind(exchange, routing_key=key)
    return queue
