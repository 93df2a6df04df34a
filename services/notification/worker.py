"""The consume wiring: the notifications queue feeds NotificationService.handle."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aio_pika.abc import AbstractQueue, AbstractRobustChannel, AbstractRobustConnection

from services.notification.service import NotificationService, RetryLater
from shared.events import Event
from shared.messaging import consume, open_consumer_channel
from shared.topology import Topology

log = logging.getLogger(__name__)

PREFETCH = 16
# Pause before a failed message goes back to the queue. The broker redelivers a requeued message
# at once and dead-letters it after the queue's delivery limit, so without a pause a short SMTP
# outage would use up every attempt within milliseconds.
REQUEUE_DELAY = 1.0


def requeue_delay(error: RetryLater, base: float) -> float:
    """How long to hold a message before requeueing it (one place to add backoff later)."""
    return base


@dataclass
class NotificationConsumer:
    channel: AbstractRobustChannel
    queue: AbstractQueue
    tag: str

    @classmethod
    async def start(
        cls,
        connection: AbstractRobustConnection,
        topology: Topology,
        service: NotificationService,
        *,
        prefetch: int = PREFETCH,
        delay: float = REQUEUE_DELAY,
    ) -> NotificationConsumer:
        async def handle(event: Event) -> None:
            try:
                await service.handle(event)
            except RetryLater as exc:
                log.warning("%s; requeueing (attempt %d)", exc, exc.attempts)
                await asyncio.sleep(requeue_delay(exc, delay))
                raise

        channel = await open_consumer_channel(connection, topology, prefetch)
        queue, tag = await consume(channel, topology.notifications_queue, handle)
        return cls(channel, queue, tag)

    async def stop(self) -> None:
        try:
            await self.queue.cancel(self.tag)
        finally:
            await self.channel.close()
