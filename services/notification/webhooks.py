"""Webhook deliveries: job events become stored deliveries, and a loop sends the due ones.

A delivery is stored (idempotently, one per endpoint and event) before its event is acknowledged,
and sent by `Dispatcher` from MongoDB, never from a request handler: a restart of this process
or of the broker loses nothing, and a receiver that is down is retried with exponential backoff
and jitter until WEBHOOK_RETRY_WINDOW has passed, after which its endpoint is disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractRobustConnection

from services.notification.service import NotificationService
from shared.errors import AppError
from shared.events import Event, JobCancelled, JobCompleted, JobFailed, JobStarted
from shared.jobstore import JobStore
from shared.messaging import Consumer
from shared.outbound import Guard
from shared.topology import Topology
from shared.webhooks import (
    WEBHOOK_EVENTS,
    Delivery,
    DeliveryStatus,
    Endpoint,
    WebhookStore,
    delivery_id,
    sign,
)

log = logging.getLogger(__name__)

# First retry after about this long; each failure doubles it, up to MAX_RETRY_DELAY.
BASE_RETRY_DELAY = 5.0
MAX_RETRY_DELAY = 3600.0
# One attempt may take this long in all (connect, send, read the answer).
ATTEMPT_TIMEOUT = 15.0
# How often an idle sender looks for due deliveries.
POLL_INTERVAL = 1.0
SENDERS = 4


def _utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int, base: float) -> float:
    """Seconds before the next try after `attempts` failures: doubling, capped, with jitter so
    that the deliveries of one outage do not all come back at once."""
    delay = min(base * 2.0 ** min(attempts - 1, 20), MAX_RETRY_DELAY)
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - spacing, not secrecy


def delivery_body(event: Event, job: dict[str, Any]) -> str:
    return json.dumps(
        {"type": str(event.type), "timestamp": event.occurred_at.isoformat(), "data": job},
        separators=(",", ":"),
    )


async def record_deliveries(
    hooks: WebhookStore, jobs: JobStore, event: Event, now: datetime
) -> int:
    """Store one delivery per subscribed endpoint of the job's owner; returns how many."""
    if event.type not in WEBHOOK_EVENTS:
        return 0
    endpoints = await hooks.subscribed(event.payload.user_id, event.type)
    if not endpoints:
        return 0
    job = await jobs.get(event.payload.job_id)
    # A job deleted meanwhile is still announced, by its id.
    data = job.public_view() if job is not None else {"id": event.payload.job_id}
    body = delivery_body(event, data)
    for endpoint in endpoints:
        await hooks.add_delivery(
            Delivery(
                id=delivery_id(endpoint.id, event.event_id),
                endpoint_id=endpoint.id,
                user_id=endpoint.user_id,
                event_id=event.event_id,
                type=event.type,
                body=body,
                created_at=now,
                retry_from=now,
                next_try=now,
            )
        )
    return len(endpoints)


@dataclass
class Dispatcher:
    """Senders that take due deliveries from MongoDB, send them through the outbound guard and
    record each outcome."""

    hooks: WebhookStore
    notices: NotificationService
    guard: Guard
    window: float
    base_delay: float = BASE_RETRY_DELAY
    poll_interval: float = POLL_INTERVAL
    clock: Callable[[], datetime] = _utcnow
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, senders: int = SENDERS) -> None:
        for n in range(senders):
            self._tasks.append(asyncio.create_task(self._run(), name=f"webhook-sender-{n}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.send_next()
            except Exception:  # an outage of MongoDB must not end the sender
                log.exception("webhook sender failed; going on")
                sent = False
            if not sent:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self.wake.wait()

    async def send_next(self) -> bool:
        """Send one due delivery, if any; False when none was due."""
        now = self.clock()
        # Held past the attempt's own deadline: a sender that dies mid-attempt leaves the
        # delivery due again once this runs out.
        lease = now + timedelta(seconds=ATTEMPT_TIMEOUT * 2 + 30)
        delivery = await self.hooks.claim_due(now, lease)
        if delivery is None:
            return False
        endpoint = await self.hooks.get(delivery.endpoint_id)
        if endpoint is None or endpoint.disabled_at is not None:
            await self.hooks.record_attempt(
                delivery.id,
                status=DeliveryStatus.FAILED,
                now=now,
                next_try=None,
                status_code=None,
                error="the endpoint is disabled or deleted",
            )
            return True
        code, error = await self._attempt(endpoint, delivery)
        await self._record(endpoint, delivery, code, error)
        return True

    async def _attempt(self, endpoint: Endpoint, delivery: Delivery) -> tuple[int | None, str]:
        """Send once; the response code (None when none came) and what went wrong ('' if not)."""
        body = delivery.body.encode()
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "video2mp3-webhooks",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(endpoint.secret, delivery.id, timestamp, body),
        }
        try:
            async with self.guard.stream(
                "POST", endpoint.url, total_timeout=ATTEMPT_TIMEOUT, headers=headers, content=body
            ) as response:
                code = response.status_code
        except AppError as exc:
            return None, f"{exc.code}: {exc.detail}"
        return code, "" if 200 <= code < 300 else f"the endpoint answered {code}"

    async def _record(
        self, endpoint: Endpoint, delivery: Delivery, code: int | None, error: str
    ) -> None:
        now = self.clock()
        if not error:
            await self.hooks.record_attempt(
                delivery.id,
                status=DeliveryStatus.DELIVERED,
                now=now,
                next_try=None,
                status_code=code,
                error=None,
            )
            await self.hooks.mark_healthy(endpoint.id, now)
            return
        window = timedelta(seconds=self.window)
        attempts = delivery.attempts + 1
        give_up = now - delivery.retry_from >= window
        next_try = None if give_up else now + timedelta(seconds=backoff(attempts, self.base_delay))
        log.info("webhook delivery %s attempt %d failed: %s", delivery.id, attempts, error)
        await self.hooks.record_attempt(
            delivery.id,
            status=DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING,
            now=now,
            next_try=next_try,
            status_code=code,
            error=error,
        )
        current = await self.hooks.mark_failing(endpoint.id, delivery.retry_from)
        if current is None or current.failing_since is None:
            return
        if now - current.failing_since >= window and await self.hooks.disable(
            endpoint.id, now, error
        ):
            log.warning("webhook %s disabled, failing since %s", endpoint.id, current.failing_since)
            await self.notices.notify_webhook_disabled(
                endpoint.id,
                endpoint.user_id,
                endpoint.user_email if endpoint.user_email_verified else None,
                endpoint.url,
                error,
            )


# The events the webhooks queue is bound to (`Topology.work_queues`).
QueuedEvent = JobStarted | JobCompleted | JobFailed | JobCancelled
QUEUED_EVENTS: tuple[type[QueuedEvent], ...] = (JobStarted, JobCompleted, JobFailed, JobCancelled)


async def consume_webhook_events(
    connection: AbstractRobustConnection,
    topology: Topology,
    hooks: WebhookStore,
    jobs: JobStore,
    dispatcher: Dispatcher,
) -> Consumer:
    async def handle(event: Event) -> None:
        if await record_deliveries(hooks, jobs, event, dispatcher.clock()):
            dispatcher.wake.set()

    return await Consumer.start(
        connection, topology, topology.webhooks_queue, handle, QUEUED_EVENTS, prefetch=16
    )
