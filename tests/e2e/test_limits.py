"""Bounded work per job through real services: a source too long is refused at upload, a
source lying about its length fails `output_too_large` leaving nothing, and short of free
space uploads get 507 while converters hold their jobs instead of failing them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import StackFactory
from tests.converter.helpers import lying_flac, silent_flac
from tests.e2e.test_options import upload_with
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.e2e.test_retention import blob_files, eventually
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher

NO_DISK_IS_THIS_FREE = str(10**18)


async def test_long_and_lying_sources_are_bounded(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with (
        private_stack(smtp.url, MAX_SOURCE_SECONDS="1800") as stack,
        client_and_user(stack) as (client, user),
    ):
        refused = await upload(client, user, silent_flac(media, 3600))
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "source_too_long"
        assert blob_files(stack, "-src") == []

        # Probes as 10 s, decodes an hour: 691 MB of WAV before the caps.
        response = await upload_with(client, user, lying_flac(media, 3600, claims=10), format="wav")
        assert response.status_code == 202, response.text
        job = await wait_final(client, user, response.json()["id"], timeout=90)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "output_too_large"
        assert blob_files(stack, "-out") == []
        # The work directory goes right after the failure is recorded.
        work = Path(stack.env["VAR_DIR"]) / "tmp" / "converter"
        await eventually(lambda: [p for p in work.rglob("*") if p.is_file()] == [], timeout=10)


async def test_short_of_space_uploads_get_507_and_jobs_wait(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with (
        private_stack(smtp.url) as stack,
        client_and_user(stack) as (client, user),
    ):
        stack.stop("converter")
        stack.env["MIN_FREE_BYTES"] = NO_DISK_IS_THIS_FREE
        stack.start("converter")
        response = await upload(client, user, media.h264_aac(2))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        await asyncio.sleep(5)
        held = (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).json()
        assert held["status"] == "queued", held
        assert "too little free space" in stack.log_tail("converter")

        stack.stop("converter")
        stack.env.pop("MIN_FREE_BYTES")
        stack.start("converter")
        job = await wait_final(client, user, job_id, timeout=90)
        assert job["status"] == "completed", job

        stack.stop("gateway")
        stack.env["MIN_FREE_BYTES"] = NO_DISK_IS_THIS_FREE
        stack.start("gateway")
        before = blob_files(stack, "-src")
        full = await upload(client, user, media.h264_aac(2))
        assert full.status_code == 507, full.text
        assert full.json()["code"] == "insufficient_storage"
        assert blob_files(stack, "-src") == before
