"""The lifecycle of stored data: sources go after success, outputs expire (410), the sweep
removes expired files, orphans and leftovers, and fails jobs stuck past their deadline."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

from shared.jobs import Job, JobStatus, SourceInfo, utcnow
from shared.jobstore import JobStore
from shared.mongo import mongo_client
from tests.conftest import StackFactory
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher, download_link
from tests.support.stack import Stack


def blob_files(stack: Stack, suffix: str) -> list[Path]:
    return sorted((Path(stack.env["VAR_DIR"]) / "blobs").rglob(f"*{suffix}"))


async def eventually(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_sources_go_and_outputs_expire(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with (
        private_stack(
            smtp.url, OUTPUT_RETENTION_DAYS=str(8 / 86400), RETENTION_SWEEP_INTERVAL="1"
        ) as stack,
        client_and_user(stack) as (client, user),
    ):
        response = await upload(client, user, media.h264_aac(2))
        job = await wait_final(client, user, response.json()["id"])
        assert job["status"] == "completed"
        assert job["expires_at"] is not None
        # Deleted right after job.completed is published, so at most a moment after.
        await eventually(lambda: blob_files(stack, "-src") == [], timeout=10)
        assert len(blob_files(stack, "-out")) == 1
        assert (
            await client.get(job["output"]["download_url"], headers=auth(user))
        ).status_code == 200
        message = await smtp_message_for(smtp, user["email"])
        link = download_link(message)
        assert (await client.get(link)).status_code == 200

        await eventually(lambda: blob_files(stack, "-out") == [], timeout=30)
        expired = await client.get(f"/v1/jobs/{job['id']}/download", headers=auth(user))
        assert expired.status_code == 410
        assert expired.json()["code"] == "output_expired"
        assert (await client.get(link)).status_code == 410
        after = (await client.get(f"/v1/jobs/{job['id']}", headers=auth(user))).json()
        assert after["output"] is None


async def smtp_message_for(smtp: SmtpCatcher, email: str):
    for _ in range(200):
        for message in smtp.messages:
            if email in str(message["To"]):
                return message
        await asyncio.sleep(0.1)
    raise AssertionError("no mail")


async def test_sources_kept_for_their_days(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with (
        private_stack(
            smtp.url, SOURCE_RETENTION_DAYS=str(6 / 86400), RETENTION_SWEEP_INTERVAL="1"
        ) as stack,
        client_and_user(stack) as (client, user),
    ):
        response = await upload(client, user, media.h264_aac(2))
        assert (await wait_final(client, user, response.json()["id"]))["status"] == "completed"
        assert len(blob_files(stack, "-src")) == 1
        await eventually(lambda: blob_files(stack, "-src") == [], timeout=30)


async def test_sweep_removes_orphans_and_fails_stuck_jobs(
    private_stack: StackFactory, smtp: SmtpCatcher
) -> None:
    async with private_stack(smtp.url, RETENTION_SWEEP_INTERVAL="1") as stack:
        root = Path(stack.env["VAR_DIR"]) / "blobs"
        orphan_id, fresh_id = f"{uuid.uuid4().hex}-src", f"{uuid.uuid4().hex}-src"
        orphan = root / orphan_id[:2] / orphan_id  # the file backend's layout
        fresh = root / fresh_id[:2] / fresh_id
        leftover = root / orphan_id[:2] / f".{orphan_id}.x1.tmp"
        for path in (orphan, leftover, fresh):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 100)
        old = time.time() - 3 * 3600
        os.utime(orphan, (old, old))
        os.utime(leftover, (old, old))

        client = mongo_client(stack.env["MONGO_URL"])
        try:
            jobs = JobStore(client[stack.env["MONGO_DB"]])
            stuck = Job(
                id=uuid.uuid4().hex,
                user_id="u1",
                user_email="stuck@example.com",
                filename="stuck.mp4",
                status=JobStatus.PROCESSING,
                source=SourceInfo(size=1),
                created_at=utcnow() - timedelta(days=3),
                updated_at=utcnow() - timedelta(days=2),
            )
            await jobs.insert(stuck)
            await eventually(lambda: not orphan.exists() and not leftover.exists())
            assert fresh.exists(), "a young blob may belong to an upload in progress"
            for _ in range(100):
                found = await jobs.get(stuck.id)
                assert found is not None
                if found.status is JobStatus.FAILED:
                    break
                await asyncio.sleep(0.2)
            assert found is not None
            assert found.status is JobStatus.FAILED
            assert found.error is not None
            assert found.error.code == "timeout"
        finally:
            await client.close()
        await smtp_message_for(smtp, "stuck@example.com")
