"""API keys through the real services: REST and WebSocket, scopes, revocation on every gateway."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.apikeys import KEY_CACHE_SECONDS
from tests.e2e.conftest import register_and_login
from tests.e2e.test_live import ws_url
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack


async def new_key(
    client: httpx.AsyncClient, user: dict[str, str], scopes: list[str], name: str = "script"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/api-keys", headers=auth(user), json={"name": name, "scopes": scopes}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {key['key']}"}


async def test_a_key_converts_and_follows_live_without_a_login(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    key = await new_key(client, user, ["jobs:read", "jobs:write"])
    assert key["key"].startswith("v2m_")
    assert len(key["key"]) >= 40
    as_key = bearer(key)
    ws = ws_url(stack.gateway_url)
    async with connect(ws, additional_headers=as_key) as socket:
        snapshot = json.loads(await asyncio.wait_for(socket.recv(), 30))
        assert snapshot["type"] == "snapshot"
        response = await upload(client, as_key, media.h264_aac(2))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), 60))
            if event.get("job_id") == job_id and event["type"] == "job.completed":
                break
    assert (await wait_final(client, as_key, job_id))["status"] == "completed"
    download = await client.get(f"/v1/jobs/{job_id}/download", headers=as_key)
    assert download.status_code == 200
    assert (await client.get("/v1/notifications", headers=as_key)).status_code == 200
    assert (await client.get("/v1/usage", headers=as_key)).status_code == 200

    listed = (await client.get("/v1/api-keys", headers=auth(user))).json()["items"]
    mine = next(k for k in listed if k["id"] == key["id"])
    assert "key" not in mine
    assert "key_hash" not in mine
    assert mine["name"] == "script"
    assert sorted(mine["scopes"]) == ["jobs:read", "jobs:write"]
    assert mine["created_at"] == key["created_at"]
    assert mine["last_used_at"] is not None
    assert key["key"] not in json.dumps(listed)


async def test_scopes_are_enforced(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    reader = bearer(await new_key(client, user, ["jobs:read"]))
    refused = await upload(client, reader, media.h264_aac(1))
    assert refused.status_code == 403
    assert refused.json()["code"] == "insufficient_scope"
    assert (await client.get("/v1/jobs", headers=reader)).status_code == 200
    tus = {**reader, "tus-resumable": "1.0.0", "upload-length": "10"}
    resumable = await client.post("/v1/uploads", headers=tus)
    assert resumable.status_code == 403
    assert resumable.json()["code"] == "insufficient_scope"

    writer = bearer(await new_key(client, user, ["jobs:write"]))
    response = await client.get("/v1/jobs", headers=writer)
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(ws_url(stack.gateway_url), additional_headers=writer) as socket:
            await asyncio.wait_for(socket.recv(), 30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008

    hooks = await client.get("/v1/webhooks", headers=writer)
    assert hooks.status_code == 403
    assert hooks.json()["code"] == "insufficient_scope"

    # A key cannot manage keys, whatever its scopes: it would mint itself wider ones.
    everything = bearer(await new_key(client, user, ["jobs:read", "jobs:write", "webhooks:write"]))
    assert (await client.get("/v1/webhooks", headers=everything)).status_code == 200
    escalation = await client.post(
        "/v1/api-keys", headers=everything, json={"name": "x", "scopes": ["jobs:read"]}
    )
    assert escalation.status_code == 403
    assert escalation.json()["code"] == "insufficient_scope"


async def test_a_revoked_key_is_refused_within_seconds_by_another_gateway(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    if "gateway2" not in stack.procs:
        await asyncio.to_thread(stack.start, "gateway2", "gateway")
    key = await new_key(client, user, ["jobs:read"])
    async with (
        httpx.AsyncClient(base_url=stack.url("gateway2"), timeout=30) as second,
        connect(ws_url(stack.url("gateway2")), additional_headers=bearer(key)) as socket,
    ):
        assert json.loads(await asyncio.wait_for(socket.recv(), 30))["type"] == "snapshot"
        # The second gateway now remembers the key as good.
        assert (await second.get("/v1/jobs", headers=bearer(key))).status_code == 200
        revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=auth(user))
        assert revoked.status_code == 204
        started = time.monotonic()
        while (status := (await second.get("/v1/jobs", headers=bearer(key))).status_code) == 200:
            assert time.monotonic() - started < KEY_CACHE_SECONDS + 10, "revoked key still works"
            await asyncio.sleep(0.2)
        assert status == 401
        # The socket it opened ends too, as soon as its next check.
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), KEY_CACHE_SECONDS + 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
    listed = (await client.get("/v1/api-keys", headers=auth(user))).json()["items"]
    assert key["id"] not in [k["id"] for k in listed]


async def test_keys_are_their_owners_alone(client: httpx.AsyncClient, user: dict[str, str]) -> None:
    key = await new_key(client, user, ["jobs:read"])
    stranger = await register_and_login(client)
    assert (await client.get("/v1/api-keys", headers=auth(stranger))).json()["items"] == []
    theft = await client.delete(f"/v1/api-keys/{key['id']}", headers=auth(stranger))
    assert theft.status_code == 404
    assert (await client.get("/v1/jobs", headers=bearer(key))).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["jobs:delete"]},
        {"name": "", "scopes": ["jobs:read"]},
        {"name": "   ", "scopes": ["jobs:read"]},
        {"name": "x", "scopes": []},
        {"scopes": ["jobs:read"]},
    ],
)
async def test_bad_key_requests_are_422(
    client: httpx.AsyncClient, user: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/v1/api-keys", headers=auth(user), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"


async def test_no_credentials_or_a_made_up_key_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/api-keys")).status_code == 401
    assert (await client.post("/v1/api-keys", json={"name": "x", "scopes": []})).status_code == 401
    made_up = {"authorization": "Bearer v2m_" + "A" * 43}
    response = await client.get("/v1/jobs", headers=made_up)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_the_cli_converts_with_an_api_key_over_a_login(
    stack: Stack,
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
) -> None:
    key = await new_key(client, user, ["jobs:read", "jobs:write"])
    env = {
        **os.environ,
        "VIDEO2MP3_API_KEY": key["key"],
        # Wrong on purpose: the key must win, without a login being tried.
        "VIDEO2MP3_EMAIL": user["email"],
        "VIDEO2MP3_PASSWORD": "not the password",
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    clip = media.h264_aac(2, name="keyed.mp4")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "convert", str(clip),
        "-o", str(tmp_path / "out"), "--server", stack.gateway_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert abs(decode(tmp_path / "out" / "keyed.mp3").duration - 2) < 0.15


async def test_a_socket_opened_with_a_keys_ticket_ends_when_the_key_is_revoked(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str]
) -> None:
    key = await new_key(client, user, ["jobs:read"])
    answer = await client.post("/v1/ws-ticket", headers=bearer(key))
    assert answer.status_code == 200, answer.text
    ticket = answer.json()["ticket"]
    async with connect(f"{ws_url(stack.gateway_url)}?ticket={ticket}") as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 30))["type"] == "snapshot"
        revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=auth(user))
        assert revoked.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), KEY_CACHE_SECONDS + 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
