"""Outages of the broker, the mail server and MongoDB: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aio_pika
import httpx

from services.cli.embedded import nx_27017_command
from shared.events import JobCompleted, JobCompletedPayload
from shared.topology import Topology
from tests.conftest import StackFactory
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory
from tests.support.net import free_port, wait_for_port
from tests.support.smtp import SmtpCatcher


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def consumer_counts(amqp_url: str, topology: Topology) -> dict[str, int]:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        counts = {}
        for name in (topology.jobs_queue, topology.notifications_queue):
            queue = await channel.declare_queue(name, passive=True)
            counts[name] = queue.declaration_result.consumer_count or 0
        return counts


async def test_broker_restart_with_20_jobs_in_flight(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, amqp_url: str
) -> None:
    async with private_stack(smtp.url) as stack, client_and_user(stack) as (client, user):
        topology = Topology(stack.env["AMQP_PREFIX"])
        source = media.h264_aac(20, size="64x48")
        job_ids = []
        for i in range(20):
            response = await upload(client, user, source, f"clip-{i:02d}.mp4")
            assert response.status_code == 202
            job_ids.append(response.json()["id"])
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            # While the broker is away an upload is refused cleanly, and leaves nothing behind.
            refused = await upload(client, user, source, "during-outage.mp4")
            assert refused.status_code == 503
            assert refused.json()["code"] == "broker_unavailable"
            await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        jobs = [await wait_final(client, user, job_id, timeout=240) for job_id in job_ids]
        assert [j["status"] for j in jobs] == ["completed"] * 20
        listed = (await client.get("/v1/jobs?limit=100", headers=auth(user))).json()["items"]
        assert sorted(j["id"] for j in listed) == sorted(job_ids)
        await smtp.wait_for(20, timeout=120)
        await asyncio.sleep(3)
        subjects = sorted(str(m["Subject"]) for m in smtp.messages)
        assert len(subjects) == 20, subjects
        assert len(set(subjects)) == 20
        # Every service found its way back, consumers included (not just the connection).
        deadline = time.monotonic() + 30
        while True:
            counts = await consumer_counts(amqp_url, topology)
            if all(c == 1 for c in counts.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert counts == {topology.jobs_queue: 1, topology.notifications_queue: 1}
        for name in ("gateway", "converter", "notification"):
            ready = httpx.get(stack.url(name) + "/readyz", timeout=5)
            assert ready.status_code == 200, (name, ready.text)


async def test_mail_server_down_for_20s(private_stack: StackFactory, media: MediaFactory) -> None:
    catcher = SmtpCatcher()  # not started: nothing listens on its port yet
    async with private_stack(catcher.url) as stack, client_and_user(stack) as (client, user):
        source = media.h264_aac(2)
        job_ids = [
            (await upload(client, user, source, f"late-{i}.mp4")).json()["id"] for i in range(3)
        ]
        for job_id in job_ids:
            assert (await wait_final(client, user, job_id))["status"] == "completed"
        await asyncio.sleep(20)
        async with catcher:
            await catcher.wait_for(3, timeout=90)
            await asyncio.sleep(3)
            subjects = sorted(str(m["Subject"]) for m in catcher.messages)
        assert len(subjects) == 3
        assert len(set(subjects)) == 3


async def test_mongodb_restart(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, tmp_path: Path
) -> None:
    data = tmp_path / "mongo"
    data.mkdir()
    port = free_port()
    mongo = subprocess.Popen(
        nx_27017_command(data, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        url = f"mongodb://127.0.0.1:{port}"
        async with (
            private_stack(smtp.url, MONGO_URL=url) as stack,
            client_and_user(stack) as (client, user),
        ):
            first = await upload(client, user, media.h264_aac(2))
            job_id = first.json()["id"]
            assert (await wait_final(client, user, job_id))["status"] == "completed"

            mongo.terminate()
            mongo.wait(10)
            started = time.monotonic()
            during = await client.get(f"/v1/jobs/{job_id}", headers=auth(user))
            assert during.status_code == 503
            assert during.json()["code"] == "database_unavailable"
            assert time.monotonic() - started < 15, "the API must answer, not hang"
            ready = await client.get("/readyz")
            assert ready.status_code == 503

            mongo = subprocess.Popen(
                nx_27017_command(data, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for_port(port)
            # No service restarts: the same processes answer again and convert again.
            for _ in range(100):
                if (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 200:
                    break
                await asyncio.sleep(0.3)
            second = await upload(client, user, media.h264_aac(2))
            assert second.status_code == 202, second.text
            assert (await wait_final(client, user, second.json()["id"]))["status"] == "completed"
            await smtp.wait_for(2, timeout=60)
    finally:
        mongo.terminate()
        mongo.wait(10)


async def test_a_short_mongodb_outage_loses_no_mail_and_fails_no_job(
    private_stack: StackFactory,
    smtp: SmtpCatcher,
    media: MediaFactory,
    tmp_path: Path,
    amqp_url: str,
) -> None:
    # Requeued at once, a message used up the queue's five deliveries within ~1 s of MongoDB
    # going away and was dead-lettered: the completion mail was never sent, a queued job ended
    # failed. Both must now wait for the database and go through.
    data = tmp_path / "mongo"
    data.mkdir()
    port = free_port()
    mongo = subprocess.Popen(
        nx_27017_command(data, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        async with (
            # A 1 s database timeout (an operation gives up after 3 s): the six deliveries the
            # queue allows fail within the 30 s outage below.
            private_stack(
                smtp.url, MONGO_URL=f"mongodb://127.0.0.1:{port}", NETWORK_TIMEOUT="1"
            ) as stack,
            client_and_user(stack) as (client, user),
        ):
            topology = Topology(stack.env["AMQP_PREFIX"])
            stack.stop("converter")
            queued = await upload(client, user, media.h264_aac(2), "queued.mp4")
            assert queued.status_code == 202
            job_id = queued.json()["id"]

            mongo.terminate()
            mongo.wait(10)
            stack.launch("converter")  # takes the queued job while the database is down
            completed = JobCompleted(
                payload=JobCompletedPayload(
                    job_id="f" * 32,
                    user_id="someone",
                    user_email=user["email"],
                    filename="during.mp4",
                    output_filename="during.mp3",
                    size=1,
                )
            )
            connection = await aio_pika.connect(amqp_url, timeout=10)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(topology.exchange)
                await exchange.publish(
                    aio_pika.Message(
                        completed.model_dump_json().encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=str(completed.type),
                )
            await asyncio.sleep(30)
            mongo = subprocess.Popen(
                nx_27017_command(data, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            wait_for_port(port)
            job = await wait_final(client, user, job_id, timeout=120)
            assert job["status"] == "completed", job
            await smtp.wait_for(2, timeout=90)
            subjects = [str(m["Subject"]) for m in smtp.messages]
            assert any("during.mp4" in s for s in subjects), subjects
            assert any("queued.mp4" in s for s in subjects), subjects
            connection = await aio_pika.connect(amqp_url, timeout=10)
            async with connection:
                channel = await connection.channel()
                for name in (topology.dead_letter_queue, topology.dead_jobs_queue):
                    dead = await channel.declare_queue(name, passive=True)
                    assert dead.declaration_result.message_count == 0, name
    finally:
        mongo.terminate()
        mongo.wait(10)
