"""Fair share of the converters between accounts.

The job queue stays one FIFO quorum queue (its delivery limit and dead-lettering are kept, and
RabbitMQ 3.x quorum queues have no message priorities). Instead, a converter taking a job looks
at who else waits: when another account with a job queued has fewer jobs running, or as many
and was served less recently, the job's message goes to the back of the queue (a copy published
with confirms, then the delivery acknowledged) and the converter takes the next one. One
account's backlog therefore moves behind any other account's job as soon as a slot frees: that
job starts within one job per slot, on one converter or many (tests/e2e/test_fair_share.py;
bench/fair_share.py measures the wait). Moving the backlog costs a confirmed publish per
message: the store's verdict is remembered for half a second per account.

A message is put back at most MAX_DEFERRALS times, so a queued job whose message is away (held
by a converter waiting for disk space, or lost until the requeue sweep) cannot make the others
circle for ever.
"""

from __future__ import annotations

import logging
import time

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from shared.errors import ErrorCode, Unavailable
from shared.events import Event, EventType
from shared.jobstore import JobStore
from shared.topology import Topology

log = logging.getLogger(__name__)

DEFERRALS_HEADER = "x-video2mp3-deferrals"
MAX_DEFERRALS = 25
VERDICT_SECONDS = 0.5


class FairShare:
    def __init__(
        self, channel: AbstractChannel, queue_name: str, jobs: JobStore, timeout: float
    ) -> None:
        self._channel = channel
        self._queue_name = queue_name
        self._jobs = jobs
        self._timeout = timeout
        self._verdicts: dict[str, tuple[float, bool]] = {}

    @classmethod
    async def open(
        cls,
        connection: AbstractRobustConnection,
        topology: Topology,
        jobs: JobStore,
        timeout: float = 10.0,
    ) -> FairShare:
        channel = await connection.channel(publisher_confirms=True)
        return cls(channel, topology.jobs_queue, jobs, timeout)

    async def defer_if_others_wait(self, message: AbstractIncomingMessage, event: Event) -> bool:
        """The consume gate of the job queue: True when the job went to the back of the queue."""
        if event.type is not EventType.JOB_SUBMITTED:
            return False
        deferrals = _count(message.headers.get(DEFERRALS_HEADER))
        if deferrals >= MAX_DEFERRALS:
            return False
        # Whether the job is still queued is not asked: deferring one that is not costs nothing
        # (the converter skips it when it comes round), and each query here is paid once per
        # message of the backlog.
        user_id = event.payload.user_id
        if not await self._others_before(user_id):
            return False
        copy = aio_pika.Message(
            message.body,
            headers={**message.headers, DEFERRALS_HEADER: deferrals + 1},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
        )
        try:
            await self._channel.default_exchange.publish(
                copy, routing_key=self._queue_name, timeout=self._timeout
            )
        except (TimeoutError, ConnectionError, aio_pika.exceptions.AMQPError) as exc:
            raise Unavailable(
                "the message broker is unavailable", code=ErrorCode.BROKER_UNAVAILABLE
            ) from exc
        log.info(
            "job %s waits behind other accounts' jobs (%d)", event.payload.job_id, deferrals + 1
        )
        return True

    async def _others_before(self, user_id: str) -> bool:
        """The store's answer, remembered for VERDICT_SECONDS: moving a backlog of hundreds
        behind another account's job then costs a publish per message, not a round of
        queries."""
        now = time.monotonic()
        known = self._verdicts.get(user_id)
        if known is not None and now - known[0] < VERDICT_SECONDS:
            return known[1]
        verdict = await self._jobs.others_before(user_id)
        if len(self._verdicts) >= 1024:
            self._verdicts.clear()
        self._verdicts[user_id] = (now, verdict)
        return verdict


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
