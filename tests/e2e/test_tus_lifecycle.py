"""Resumable uploads over time and against the account's limits, on a stack of their own
(uploads that expire within seconds, a small storage quota)."""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from shared.jobs import utcnow
from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import auth, wait_final
from tests.e2e.test_tus import OCTETS, TUS, created, head, patch
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher

EXPIRY_SECONDS = 3.6


async def test_unfinished_uploads_expire_and_are_swept(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    env = {
        "UPLOAD_EXPIRY_HOURS": str(EXPIRY_SECONDS / 3600),
        "RETENTION_SWEEP_INTERVAL": "1",
        "USER_STORAGE_BYTES": str(10 * 1024 * 1024),
    }
    async with (
        private_stack(smtp.url, **env) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client,
    ):
        user = await register_and_login(client)
        blobs = Path(stack.env["VAR_DIR"]) / "blobs"

        over = await client.post(
            "/v1/uploads", headers={**TUS, **auth(user), "Upload-Length": str(11 * 1024 * 1024)}
        )
        assert over.status_code == 403
        assert over.json()["code"] == "storage_quota_exceeded"

        url = await created(client, user, 100_000)
        first = await patch(client, user, url, 0, b"ID3\x04" + bytes(5000))
        assert first.status_code == 204
        expires = parsedate_to_datetime(first.headers["Upload-Expires"])
        assert 0 < (expires - utcnow()).total_seconds() <= EXPIRY_SECONDS
        assert [p.name for p in blobs.rglob("*.part")] != []

        data = media.h264_aac(seconds=2).read_bytes()
        finished = await client.post(
            "/v1/uploads",
            headers={**TUS, **OCTETS, **auth(user), "Upload-Length": str(len(data))},
            content=data,
        )
        assert finished.status_code == 201
        job_id = finished.headers["Job-Id"]

        await asyncio.sleep(EXPIRY_SECONDS + 3)
        assert (await head(client, user, url)).status_code in (404, 410)
        assert list(blobs.rglob("*.part")) == []
        # The finished upload's record goes too; its job stays.
        assert (await head(client, user, finished.headers["Location"])).status_code == 404
        assert (await wait_final(client, user, job_id))["status"] == "completed"
        late = await client.patch(
            url, headers={**TUS, **OCTETS, **auth(user), "Upload-Offset": "5004"}, content=b"x"
        )
        assert late.status_code == 404
