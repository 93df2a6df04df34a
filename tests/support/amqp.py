"""Remove a test run's queues and exchanges so the shared broker does not fill up."""

from __future__ import annotations

import contextlib

import aio_pika

from shared.topology import Topology


async def delete_topology(amqp_url: str, prefix: str) -> None:
    topology = Topology(prefix)
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        for queue in (*topology.work_queues, topology.dead_letter_queue, topology.dead_jobs_queue):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(exchange)
