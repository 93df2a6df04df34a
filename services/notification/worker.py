"""The consume wiring: the notifications queue feeds NotificationService.handle."""

from __future__ import annotations

import asyncio
import logging
import time

from aio_pika.abc import AbstractRobustConnection

from services.notification.service import NotificationService, RetryLater
from shared.events import Event, JobCompleted, JobFailed
from shared.messaging import Consumer
from shared.topology import Topology

log = logging.getLogger(__name__)

PREFETCH = 16
# First pause after a failed mail; it doubles up to MAX_RETRY_DELAY.
REQUEUE_DELAY = 1.0
MAX_RETRY_DELAY = 60.0


def retry_delay(attempt: int, base: float) -> float:
    """Exponential backoff: base, 2*base, 4*base ... capped at MAX_RETRY_DELAY."""
    return float(min(base * 2 ** min(attempt, 16), MAX_RETRY_DELAY))


async def deliver_with_retries(
    service: NotificationService, event: Event, *, base_delay: float, window: float
) -> None:
    """Try, and retry with backoff, for `window` seconds; then record the mail as failed.

    The message stays unacked meanwhile (the broker redelivers it if this process dies), and is
    never requeued: a requeue would burn the queue's delivery limit within seconds of an SMTP
    outage and dead-letter the mail.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            await service.handle(event)
            return
        except RetryLater as exc:
            waited = time.monotonic() - started
            if waited >= window:
                await service.give_up(event, str(exc))
                return
            delay = min(retry_delay(attempt, base_delay), window - waited)
            log.warning("%s; retrying in %.0fs", exc, delay)
            attempt += 1
            await asyncio.sleep(delay)


NOTIFIED: tuple[type[JobCompleted | JobFailed], ...] = (JobCompleted, JobFailed)


async def consume_notifications(
    connection: AbstractRobustConnection,
    topology: Topology,
    service: NotificationService,
    *,
    prefetch: int = PREFETCH,
    delay: float = REQUEUE_DELAY,
    retry_window: float = 900.0,
) -> Consumer:
    async def handle(event: JobCompleted | JobFailed) -> None:
        await deliver_with_retries(service, event, base_delay=delay, window=retry_window)

    return await Consumer.start(
        connection, topology, topology.notifications_queue, handle, NOTIFIED, prefetch=prefetch
    )
