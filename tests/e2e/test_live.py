"""Live progress over the WebSocket, across gateway instances, for the owner only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import upload, wait_final
from tests.support.media import MediaFactory
from tests.support.stack import Stack

FINAL = {"job.completed", "job.failed", "job.cancelled"}


def ws_url(http_url: str, token: str | None = None) -> str:
    url = http_url.replace("http://", "ws://") + "/v1/ws"
    return f"{url}?access_token={token}" if token else url


async def receive(ws: ClientConnection, timeout: float = 60) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def events_until_final(ws: ClientConnection, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        event = await receive(ws)
        if event.get("job_id") != job_id:
            continue
        events.append(event)
        if event["type"] in FINAL:
            return events


def access(user: dict[str, str]) -> str:
    return user["access_token"]


async def test_progress_stream_for_a_30s_video(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    async with connect(ws_url(stack.gateway_url, access(user))) as ws:
        snapshot = await receive(ws)
        assert snapshot == {"type": "snapshot", "jobs": []}
        response = await upload(client, user, media.h264_aac(30, size="160x120"))
        job_id = response.json()["id"]
        events = await events_until_final(ws, job_id)
    types = [e["type"] for e in events]
    assert types[0] == "job.started"
    assert types[-1] == "job.completed"
    progress = [e["progress"] for e in events if e["type"] == "job.progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 100
    assert len(progress) >= 2


async def test_polling_sees_a_long_jobs_progress(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    # For clients without a WebSocket: the job's stored progress moves while FFmpeg runs
    # (written at most once a second, so only a job longer than that shows any), and so is
    # the source's description.
    response = await upload(client, user, media.long_tone())
    job_id = response.json()["id"]
    headers = {"Authorization": user["authorization"]}
    seen: list[tuple[str, int]] = []
    described: list[float | None] = []
    for _ in range(600):
        job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        seen.append((job["status"], job["progress"]))
        if job["status"] == "processing":
            described.append(job["source"]["duration"])
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.1)
    assert seen[-1] == ("completed", 100)
    running = [progress for status, progress in seen if status == "processing"]
    assert any(0 < progress < 100 for progress in running), seen
    assert running == sorted(running)
    assert described[-1] == pytest.approx(1800, abs=1), described


async def test_snapshot_lists_active_jobs(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    # A long clip keeps the job active while the second socket connects.
    response = await upload(client, user, media.h264_aac(240, size="64x48"))
    job_id = response.json()["id"]
    async with connect(
        ws_url(stack.gateway_url), additional_headers={"Authorization": user["authorization"]}
    ) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        listed = {j["id"]: j for j in snapshot["jobs"]}
        if job_id in listed:
            assert listed[job_id]["status"] in ("queued", "processing")
        else:  # it finished in between: then it must be final by now
            job = await wait_final(client, user, job_id)
            assert job["status"] == "completed"
    await wait_final(client, user, job_id)


async def test_second_gateway_sees_events_and_strangers_see_nothing(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    if "gateway2" not in stack.procs:
        await asyncio.to_thread(stack.start, "gateway2", "gateway")
    second = stack.url("gateway2")
    stranger = await register_and_login(client)
    async with (
        connect(ws_url(second, access(user))) as ws,
        connect(ws_url(stack.gateway_url, access(stranger))) as other,
    ):
        await receive(ws)
        await receive(other)
        response = await upload(client, user, media.h264_aac(5))
        events = await events_until_final(ws, response.json()["id"])
        assert events[-1]["type"] == "job.completed"
        with pytest.raises(TimeoutError):
            await receive(other, timeout=1.5)


@pytest.mark.parametrize("token", [None, "garbage", "expired"])
async def test_bad_tokens_close_with_1008(stack: Stack, token: str | None) -> None:
    if token == "expired":
        token = _expired_token(stack)
    async with connect(ws_url(stack.gateway_url, token)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws, timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008


def _expired_token(stack: Stack) -> str:
    """A token signed by the stack's own key, but past its expiry."""
    return _token_expiring_in(stack, -3600)


def _token_expiring_in(stack: Stack, seconds: int, user_id: str = "someone") -> str:
    """A token signed by the stack's own key that expires `seconds` from now."""
    import time
    from pathlib import Path

    from services.auth.keys import load_signing_key
    from shared.settings import Settings

    settings = Settings(var_dir=Path(stack.env["VAR_DIR"]))
    key = load_signing_key(settings)
    now = int(time.time())
    claims = {
        "sub": user_id,
        "email": "someone@example.com",
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now - 60,
        "exp": now + seconds,
    }
    return key.sign(claims)


async def test_the_stream_ends_with_its_token(stack: Stack) -> None:
    # The token is checked at connect; without this a leaked token would keep its user's events
    # coming for as long as the socket stays open.
    async with connect(ws_url(stack.gateway_url, _token_expiring_in(stack, 3))) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws, timeout=15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "token expired"


async def test_binary_frames_are_ignored(client: httpx.AsyncClient, stack: Stack) -> None:
    user = await register_and_login(client)
    async with connect(ws_url(stack.gateway_url, access(user))) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        await ws.send(b"\x00\x01 not text")
        await ws.send("ping")
        assert (await receive(ws, timeout=10)) == {"type": "pong"}
