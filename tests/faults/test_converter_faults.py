"""A converter killed mid-job, a poison message, an FFmpeg that never ends, a SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import aio_pika

from shared.events import JobSubmitted, JobSubmittedPayload
from shared.topology import Topology
from tests.conftest import StackFactory
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory, decode
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


async def wait_status(client, user, job_id: str, status: str, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).json()
        if job["status"] == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job never reached {status}")


def outputs(stack: Stack) -> list[Path]:
    return sorted((Path(stack.env["VAR_DIR"]) / "blobs").rglob("*-out"))


def mails_for(smtp: SmtpCatcher, job_filename: str) -> int:
    return sum(1 for m in smtp.messages if job_filename in str(m["Subject"]))


async def test_kill_9_mid_conversion_completes_once(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, tmp_path: Path
) -> None:
    async with private_stack(smtp.url) as stack:
        async with client_and_user(stack) as (client, user):
            response = await upload(client, user, media.long_tone(), "killed.flac")
            job_id = response.json()["id"]
            await wait_status(client, user, job_id, "processing")
            await asyncio.sleep(1)
            stack.stop("converter", sig_kill=True)
            await asyncio.to_thread(stack.start, "converter")
            job = await wait_final(client, user, job_id, timeout=120)
            assert job["status"] == "completed", job
            mp3 = await client.get(f"/v1/jobs/{job_id}/download", headers=auth(user))
            (tmp_path / "out.mp3").write_bytes(mp3.content)
            assert abs(decode(tmp_path / "out.mp3").duration - 1800) < 0.5
        await smtp.wait_for(1)
        await asyncio.sleep(2)
        assert mails_for(smtp, "killed.flac") == 1
        assert len(outputs(stack)) == 1
        # The dead converter's temp dir was swept when the new one started.
        temp = Path(stack.env["VAR_DIR"]) / "tmp" / "converter"
        assert [p.name for p in temp.iterdir()] == [f"pid-{stack.procs['converter'].pid}"]


async def test_poison_messages_are_dead_lettered_and_work_goes_on(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, amqp_url: str
) -> None:
    async with private_stack(smtp.url) as stack:
        topology = Topology(stack.env["AMQP_PREFIX"])
        missing = JobSubmitted(
            payload=JobSubmittedPayload(
                job_id="0" * 32,
                user_id="nobody",
                user_email="nobody@example.com",
                filename="ghost.mp4",
                source_blob_id="ghost-src",
                size=1,
            )
        )
        unknown_type = json.loads(missing.model_dump_json())
        unknown_type["type"] = "job.exploded"
        bodies = [
            b"{not json",
            json.dumps(unknown_type).encode(),
            missing.model_dump_json().encode(),
        ]
        connection = await aio_pika.connect(amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(topology.exchange)
            for body in bodies:
                await exchange.publish(aio_pika.Message(body), routing_key="job.submitted")
            async with client_and_user(stack) as (client, user):
                response = await upload(client, user, media.h264_aac(2))
                job = await wait_final(client, user, response.json()["id"])
                assert job["status"] == "completed"
            dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)
            for _ in range(50):
                if (dead.declaration_result.message_count or 0) >= 3:
                    break
                await asyncio.sleep(0.1)
                dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)
            assert dead.declaration_result.message_count == 3
            jobs = await channel.declare_queue(topology.jobs_queue, passive=True)
            assert jobs.declaration_result.message_count == 0


async def test_ffmpeg_that_runs_too_long_is_killed(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with private_stack(smtp.url, FFMPEG_TIMEOUT_BASE="1", FFMPEG_TIMEOUT_FACTOR="0") as stack:
        async with client_and_user(stack) as (client, user):
            response = await upload(client, user, media.long_tone())
            job = await wait_final(client, user, response.json()["id"])
        assert job["status"] == "failed"
        assert job["error"]["code"] == "timeout"
        assert outputs(stack) == []
        converter_pid = stack.procs["converter"].pid
        children = Path(f"/proc/{converter_pid}/task/{converter_pid}/children").read_text().split()
        assert children == [], "FFmpeg must not outlive its timeout"


async def test_sigterm_lets_a_running_job_finish(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with private_stack(smtp.url) as stack, client_and_user(stack) as (client, user):
        response = await upload(client, user, media.long_tone())
        job_id = response.json()["id"]
        await wait_status(client, user, job_id, "processing")
        os.kill(stack.procs["converter"].pid, signal.SIGTERM)
        code = await asyncio.to_thread(stack.procs["converter"].wait, 60)
        # uvicorn re-raises the signal once shut down, so the exit status is SIGTERM's.
        assert code in (0, -signal.SIGTERM)
        job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).json()
        assert job["status"] == "completed"


async def test_sigterm_hands_back_what_cannot_finish(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with private_stack(smtp.url, CONVERTER_SHUTDOWN_GRACE="0.5") as stack:
        async with client_and_user(stack) as (client, user):
            response = await upload(client, user, media.long_tone(), "handed-back.flac")
            job_id = response.json()["id"]
            await wait_status(client, user, job_id, "processing")
            stack.procs["converter"].send_signal(signal.SIGTERM)
            await asyncio.to_thread(stack.procs["converter"].wait, 60)
            stack.procs.pop("converter")
            job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).json()
            assert job["status"] == "processing"
            await asyncio.to_thread(stack.start, "converter")
            job = await wait_final(client, user, job_id, timeout=120)
            assert job["status"] == "completed"
        await smtp.wait_for(1)
        await asyncio.sleep(1)
        assert mails_for(smtp, "handed-back.flac") == 1
