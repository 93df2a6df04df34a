"""Metrics on every service, and one correlation id from the upload through every service."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.e2e.test_pipeline import auth, wait_final
from tests.support.media import MediaFactory
from tests.support.stack import Stack


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.compile(
        rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$", re.M
    )
    return sum(float(m.group(2)) for m in pattern.finditer(text))


async def test_metrics_and_correlation_ids(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    request_id = "upload-trace-0001"
    with media.h264_aac(2).open("rb") as f:
        response = await client.post(
            "/v1/jobs",
            headers={**auth(user), "X-Request-ID": request_id},
            files={"file": ("traced.mp4", f)},
        )
    assert response.headers["x-request-id"] == request_id
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "completed"

    gateway = (await client.get("/metrics")).text
    assert metric(gateway, "video2mp3_upload_bytes_total") > 0
    assert metric(gateway, "video2mp3_http_requests_total", 'route="/v1/jobs/{job_id}"') >= 1
    async with httpx.AsyncClient(timeout=10) as other:
        converter = (await other.get(stack.url("converter") + "/metrics")).text
        notification = (await other.get(stack.url("notification") + "/metrics")).text
        auth_metrics = (await other.get(stack.url("auth") + "/metrics")).text
    assert metric(converter, "video2mp3_jobs_finished_total", 'status="completed"') >= 1
    assert metric(converter, "video2mp3_conversion_seconds_count") >= 1
    assert "video2mp3_queue_depth" in converter
    for _ in range(50):
        notification = (await client.get(stack.url("notification") + "/metrics")).text
        if metric(notification, "video2mp3_emails_total", 'result="sent"') >= 1:
            break
        await asyncio.sleep(0.1)
    assert metric(notification, "video2mp3_emails_total", 'result="sent"') >= 1
    assert "video2mp3_http_requests_total" in auth_metrics

    # The upload's request id is the job's correlation id in every service's log lines.
    for name in ("gateway", "converter", "notification"):
        assert f"[{request_id}]" in stack.log_tail(name, 200_000), name
