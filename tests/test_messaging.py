"""A consumer takes the events its handler declares; any other event is dead-lettered where it
arrives, never handed to a handler that does not expect it."""

from __future__ import annotations

import asyncio

import aio_pika

from shared.events import EventType, JobRef, JobStarted, JobSubmitted, encode_event, parse_event
from shared.messaging import connect, consume, open_consumer_channel
from shared.settings import Settings
from shared.topology import Topology
from tests.support.amqp import delete_topology


async def test_an_event_the_handler_does_not_take_is_dead_lettered(settings: Settings) -> None:
    topology = Topology(settings.amqp_prefix)
    connection = await connect(settings.amqp_url, "test-messaging", 5)
    try:
        channel = await open_consumer_channel(connection, topology, 10)
        handled: list[JobSubmitted] = []

        async def handle(event: JobSubmitted) -> None:
            handled.append(event)

        await consume(channel, topology.jobs_queue, handle, (JobSubmitted,))
        stray = JobStarted(payload=JobRef(job_id="j1", user_id="u1"))
        # Under the job queue's routing key, as a faulty or hostile publisher could send it.
        exchange = await channel.get_exchange(topology.exchange)
        await exchange.publish(
            aio_pika.Message(encode_event(stray)), routing_key=str(EventType.JOB_SUBMITTED)
        )
        dead = await channel.get_queue(topology.dead_letter_queue)
        parked = None
        async with asyncio.timeout(20):
            while parked is None:
                parked = await dead.get(fail=False, no_ack=True)
                await asyncio.sleep(0.1)
        assert parse_event(parked.body).event_id == stray.event_id
        assert handled == []
    finally:
        await connection.close()
        await delete_topology(settings.amqp_url, settings.amqp_prefix)
