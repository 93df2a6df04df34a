"""Wires RabbitMQ deliveries to the converter: the shared job queue and a private control queue."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from services.converter.service import Converter
from shared.events import EventType
from shared.messaging import bind_private_queue, consume, open_consumer_channel
from shared.topology import Topology

log = logging.getLogger(__name__)


class ConverterWorker:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        converter: Converter,
        concurrency: int,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._converter = converter
        self._concurrency = max(1, concurrency)
        self._jobs: tuple[AbstractQueue, str] | None = None

    async def start(self) -> None:
        # Prefetch = concurrency: the broker hands this process exactly as many jobs as it runs.
        channel = await open_consumer_channel(self._connection, self._topology, self._concurrency)
        self._jobs = await consume(channel, self._topology.jobs_queue, self._converter.handle)
        control_channel = await open_consumer_channel(self._connection, self._topology, 50)
        control = await bind_private_queue(
            control_channel, self._topology, [str(EventType.JOB_CANCEL_REQUESTED)]
        )
        await consume(control_channel, control.name, self._converter.handle_control)
        log.info(
            "converter consuming %s, %d at a time", self._topology.jobs_queue, self._concurrency
        )

    async def stop(self, grace: float) -> None:
        """Stop taking jobs, give running ones `grace` seconds, hand the rest back."""
        if self._jobs is not None:
            queue, tag = self._jobs
            await queue.cancel(tag)
        await self._converter.wait_idle(grace)
