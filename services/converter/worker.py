"""Wires RabbitMQ deliveries to the converter: the job queue, the dead-letter copy and a
private control queue; and runs the outbox sweep."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aio_pika.abc import AbstractQueue, AbstractRobustChannel, AbstractRobustConnection

from services.converter.retention import Requeuer, RetentionSweeper
from services.converter.service import Converter
from shared.events import ALL_EVENTS, EventType, JobCancelRequested, JobSubmitted
from shared.fairshare import FairShare
from shared.messaging import bind_private_queue, consume, open_consumer_channel
from shared.metrics import QUEUE_DEPTH
from shared.topology import Topology

log = logging.getLogger(__name__)

OUTBOX_SWEEP_INTERVAL = 15.0
QUEUE_DEPTH_INTERVAL = 10.0


class ConverterWorker:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        converter: Converter,
        concurrency: int,
        sweeper: RetentionSweeper | None = None,
        sweep_interval: float = 600.0,
        requeuer: Requeuer | None = None,
    ) -> None:
        self._requeuer = requeuer
        self._requeue_task: asyncio.Task[None] | None = None
        self._retention = sweeper
        self._retention_interval = sweep_interval
        self._retention_task: asyncio.Task[None] | None = None
        self._connection = connection
        self._topology = topology
        self._converter = converter
        self._concurrency = max(1, concurrency)
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._gauge: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Prefetch = concurrency: the broker hands this process exactly as many jobs as it runs.
        channel = await open_consumer_channel(self._connection, self._topology, self._concurrency)
        fair = await FairShare.open(self._connection, self._topology, self._converter.jobs)
        self._consumers.append(
            await consume(
                channel,
                self._topology.jobs_queue,
                self._converter.convert,
                (JobSubmitted,),
                gate=fair.defer_if_others_wait,
            )
        )
        side = await open_consumer_channel(self._connection, self._topology, 50)
        self._consumers.append(
            await consume(
                side,
                self._topology.dead_jobs_queue,
                self._converter.handle_dead_letter,
                ALL_EVENTS,
            )
        )
        control = await bind_private_queue(
            side, self._topology, [str(EventType.JOB_CANCEL_REQUESTED)]
        )
        await consume(side, control.name, self._converter.handle_control, (JobCancelRequested,))
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._gauge = asyncio.create_task(self._measure_queues(side))
        if self._retention is not None:
            self._retention_task = asyncio.create_task(self._retain_forever(self._retention))
        if self._requeuer is not None:
            self._requeue_task = asyncio.create_task(self._requeue_forever(self._requeuer))
        log.info(
            "converter consuming %s, %d at a time", self._topology.jobs_queue, self._concurrency
        )

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(OUTBOX_SWEEP_INTERVAL)
            try:
                sent = await self._converter.sweep_outbox()
                if sent:
                    log.warning("re-published %d unsent final event(s)", sent)
            except Exception:  # an outage must not end the sweep; it runs again next round
                log.exception("outbox sweep failed")

    async def _retain_forever(self, sweeper: RetentionSweeper) -> None:
        while True:
            try:
                await sweeper.sweep()
            except Exception:  # an outage must not end the sweeps; the next one catches up
                log.exception("retention sweep failed")
            await asyncio.sleep(self._retention_interval)

    async def _requeue_forever(self, requeuer: Requeuer) -> None:
        while True:
            await asyncio.sleep(requeuer.interval)
            try:
                await requeuer.sweep()
            except Exception:  # an outage must not end the sweeps; the next one catches up
                log.exception("requeue sweep failed")

    async def _measure_queues(self, channel: AbstractRobustChannel) -> None:
        """Keep the queue-depth gauge current (what autoscalers and dashboards read)."""
        names = (*self._topology.work_queues, self._topology.dead_letter_queue)
        while True:
            for name in names:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except Exception:  # reconnecting: try again next round
                    break
                QUEUE_DEPTH.labels(name).set(queue.declaration_result.message_count or 0)
            await asyncio.sleep(QUEUE_DEPTH_INTERVAL)

    async def stop(self, grace: float) -> None:
        """Stop taking jobs, give running ones `grace` seconds, hand the rest back."""
        for task in (self._sweeper, self._gauge, self._retention_task, self._requeue_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await self._converter.wait_idle(grace)
        if self._converter.running:
            log.warning(
                "%d conversion(s) still running; handing them back", self._converter.running
            )
            self._converter.cancel_all()
            await self._converter.wait_idle(5)
