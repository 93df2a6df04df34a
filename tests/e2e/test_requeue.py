"""No job is lost for want of a message: a queued job whose message is gone is published
again, converted once and mailed once, with several converters sweeping at once."""

from __future__ import annotations

import asyncio

import aio_pika

from shared.jobstore import JobStore
from shared.mongo import mongo_client
from shared.topology import Topology
from tests.conftest import StackFactory
from tests.e2e.test_pipeline import upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher


async def purge_jobs(amqp_url: str, prefix: str) -> int:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(prefix).jobs_queue, ensure=True)
        purged = await queue.purge()
        return purged.message_count or 0


async def test_a_purged_job_still_completes_once_with_one_mail(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, amqp_url: str
) -> None:
    async with (
        private_stack(smtp.url, REQUEUE_AFTER_SECONDS="2") as stack,
        client_and_user(stack) as (client, user),
    ):
        # No converter while the message is purged: nothing can take it first.
        stack.stop("converter")
        response = await upload(client, user, media.h264_aac(2))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert await purge_jobs(amqp_url, stack.env["AMQP_PREFIX"]) == 1
        # Two converters sweep the same database: one republishes, one converts.
        stack.start("converter")
        stack.start("converter2", "converter")
        job = await wait_final(client, user, job_id, timeout=90)
        assert job["status"] == "completed", job
        await asyncio.sleep(5)  # room for a second conversion or mail, if there were one
        mails = [m for m in smtp.messages if user["email"] in str(m["To"])]
        assert len(mails) == 1
        mongo = mongo_client(stack.env["MONGO_URL"], 5)
        try:
            stored = await JobStore(mongo[stack.env["MONGO_DB"]]).get(job_id)
        finally:
            await mongo.close()
        assert stored is not None
        assert stored.attempts == 1
