"""Exchange and queue names and their declaration, defined once for every service."""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.events import EventType

# Deliveries past this count are dead-lettered instead of requeued, so one bad file cannot jam
# the queue.
DELIVERY_LIMIT = 5
# The parked dead letters are a diagnostic aid, not a store: the oldest go first past this many.
DEAD_LETTER_MAX_LENGTH = 10_000


@dataclass(frozen=True)
class Topology:
    prefix: str = "video2mp3"

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        """Every dead-lettered message, parked for operators to inspect; nothing consumes it."""
        return f"{self.prefix}.dead"

    @property
    def dead_jobs_queue(self) -> str:
        """A copy of each dead-lettered message for converters, which fail the job it names."""
        return f"{self.prefix}.dead.jobs"

    @property
    def jobs_queue(self) -> str:
        """Consumed by converters: one message per submitted job."""
        return f"{self.prefix}.jobs"

    @property
    def notifications_queue(self) -> str:
        """Consumed by notification: finished jobs to tell their owners about."""
        return f"{self.prefix}.notifications"

    @property
    def imports_queue(self) -> str:
        """Consumed by converters' importers: URLs to fetch into the blob store."""
        return f"{self.prefix}.imports"

    @property
    def webhooks_queue(self) -> str:
        """Consumed by notification: job events that become webhook deliveries."""
        return f"{self.prefix}.webhooks"

    @property
    def work_queues(self) -> dict[str, tuple[EventType, ...]]:
        return {
            self.jobs_queue: (EventType.JOB_SUBMITTED,),
            self.imports_queue: (EventType.JOB_IMPORT_REQUESTED,),
            self.notifications_queue: (EventType.JOB_COMPLETED, EventType.JOB_FAILED),
            self.webhooks_queue: (
                EventType.JOB_STARTED,
                EventType.JOB_COMPLETED,
                EventType.JOB_FAILED,
                EventType.JOB_CANCELLED,
            ),
        }


async def declare_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    return await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the exchange, the durable work queues and the dead-letter path (idempotent)."""
    exchange = await declare_exchange(channel, topology)
    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    for name in (topology.dead_letter_queue, topology.dead_jobs_queue):
        dead = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-max-length": DEAD_LETTER_MAX_LENGTH},
        )
        await dead.bind(dlx)
    for name, keys in topology.work_queues.items():
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": topology.dead_letter_exchange,
            },
        )
        for key in keys:
            await queue.bind(exchange, routing_key=str(key))
    return exchange


async def declare_work_queue(
    channel: AbstractChannel, topology: Topology, name: str
) -> AbstractQueue:
    await declare_topology(channel, topology)
    return await channel.get_queue(name, ensure=True)
