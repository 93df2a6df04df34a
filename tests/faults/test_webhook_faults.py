"""Webhook deliveries survive a killed notification service and a broker restart."""

from __future__ import annotations

import asyncio
import json

from standardwebhooks import Webhook

from tests.conftest import StackFactory
from tests.e2e.test_pipeline import upload, wait_final
from tests.e2e.test_webhooks import create_hook, wait_deliveries
from tests.faults.conftest import client_and_user
from tests.faults.test_outages import rabbitmqctl
from tests.support.media import MediaFactory
from tests.support.receiver import receiving
from tests.support.smtp import SmtpCatcher


async def test_a_killed_sender_and_a_broker_restart_lose_no_delivery(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    clip = media.tone(2, 0.5, "webhook-fault.flac")
    async with (
        receiving() as receiver,
        private_stack(smtp.url, OUTBOUND_ALLOW_NETS="127.0.0.0/8", NETWORK_TIMEOUT="15") as stack,
        client_and_user(stack) as (client, user),
    ):
        receiver.status["/hook"] = 503
        hook = await create_hook(client, user, receiver.url("/hook"), ["job.completed"])
        first = (await upload(client, user, clip, "first.flac")).json()
        assert (await wait_final(client, user, first["id"]))["status"] == "completed"
        # Stored and being retried when its sender dies.
        await wait_deliveries(client, user, hook["id"], lambda i: i and i[0]["attempts"] >= 1)
        stack.stop("notification", sig_kill=True)
        # Finished while nothing consumes its event, which then waits out a broker restart.
        second = (await upload(client, user, clip, "second.flac")).json()
        assert (await wait_final(client, user, second["id"]))["status"] == "completed"
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(2)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        receiver.status["/hook"] = 204
        failed_before = len(receiver.on("/hook"))
        await asyncio.to_thread(stack.start, "notification")
        delivered = await wait_deliveries(
            client,
            user,
            hook["id"],
            lambda i: len(i) == 2 and all(d["status"] == "delivered" for d in i),
            timeout=120,
        )
        assert len(delivered) == 2
        accepted = receiver.on("/hook")[failed_before:]
        assert len(accepted) == 2
        jobs = sorted(
            Webhook(hook["secret"]).verify(r.body, r.headers)["data"]["id"] for r in accepted
        )
        assert jobs == sorted([first["id"], second["id"]])
        await asyncio.sleep(3)
        per_job = [json.loads(r.body)["data"]["id"] for r in receiver.on("/hook")]
        # Retries of the first carried one id throughout; the second arrived once.
        assert per_job.count(second["id"]) == 1
        first_ids = {
            r.headers["webhook-id"] for r in receiver.on("/hook") if first["id"] in str(r.body)
        }
        assert len(first_ids) == 1
