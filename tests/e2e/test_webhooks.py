"""Signed webhooks against the real services: deliveries that the Standard Webhooks verifier
(`standardwebhooks` from PyPI, not our code) accepts, retries, disabling, replay, and the API's
refusals. Receivers listen on loopback, allowed by OUTBOUND_ALLOW_NETS."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.support.media import MediaFactory
from tests.support.receiver import Receiver, receiving
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


async def wait_deliveries(
    client: httpx.AsyncClient,
    user: dict[str, str],
    hook_id: str,
    done: Any,
    timeout: float = 60,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=auth(user))
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        if done(items):
            return items
        assert time.monotonic() < deadline, items
        await asyncio.sleep(0.3)


async def create_hook(
    client: httpx.AsyncClient, user: dict[str, str], url: str, events: list[str]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks", headers=auth(user), json={"url": url, "events": events}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def verified(secret: str, received: Any) -> dict[str, Any]:
    """The body, once the reference verifier has accepted its signature."""
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def test_deliveries_verify_retry_disable_and_replay(
    private_stack: StackFactory, media: MediaFactory
) -> None:
    clip = media.tone(2, 0.5, "webhook.flac")
    async with (
        SmtpCatcher() as smtp,
        receiving() as receiver,
        private_stack(
            smtp.url,
            OUTBOUND_ALLOW_NETS="127.0.0.0/8",
            WEBHOOK_RETRY_WINDOW="6",
            NETWORK_TIMEOUT="15",
        ) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client,
    ):
        user = await register_and_login(client)  # VERIFY_EMAILS=false: a proven address
        good = await create_hook(
            client, user, receiver.url("/ok"), ["job.started", "job.completed"]
        )
        assert good["secret"].startswith("whsec_")
        assert good["events"] == ["job.started", "job.completed"]
        receiver.status["/down"] = 503
        bad = await create_hook(client, user, receiver.url("/down"), ["job.completed"])
        shown = (await client.get(f"/v1/webhooks/{good['id']}", headers=auth(user))).json()
        assert "secret" not in shown
        listed = (await client.get("/v1/webhooks", headers=auth(user))).json()["items"]
        assert {h["id"] for h in listed} == {good["id"], bad["id"]}

        job = (await upload(client, user, clip)).json()
        assert (await wait_final(client, user, job["id"]))["status"] == "completed"
        got = await receiver.wait_for("/ok", 2)
        bodies = [verified(good["secret"], r) for r in got]
        assert sorted(b["type"] for b in bodies) == ["job.completed", "job.started"]
        completed = next(b for b in bodies if b["type"] == "job.completed")
        assert completed["data"]["id"] == job["id"]
        assert completed["data"]["status"] == "completed"
        assert completed["data"]["output"]["download_url"] == f"/v1/jobs/{job['id']}/download"
        assert got[0].headers["webhook-signature"].startswith("v1,")
        # Another endpoint's secret does not verify it.
        with pytest.raises(WebhookVerificationError):
            Webhook(bad["secret"]).verify(got[0].body, got[0].headers)
        delivered = await wait_deliveries(client, user, good["id"], lambda items: len(items) == 2)
        assert {(d["status"], d["attempts"], d["last_status_code"]) for d in delivered} == {
            ("delivered", 1, 204)
        }

        # The failing endpoint is retried with backoff until the window ends, then disabled.
        failed = await wait_deliveries(
            client, user, bad["id"], lambda i: i and i[0]["status"] == "failed", timeout=90
        )
        assert failed[0]["attempts"] >= 2
        assert failed[0]["last_status_code"] == 503
        assert failed[0]["next_try"] is None
        attempts = receiver.on("/down")
        assert len({r.headers["webhook-id"] for r in attempts}) == 1  # one message, retried
        for r in attempts:
            verified(bad["secret"], r)
        deadline = time.monotonic() + 30
        while not (await client.get(f"/v1/webhooks/{bad['id']}", headers=auth(user))).json()[
            "disabled"
        ]:
            assert time.monotonic() < deadline, "the failing endpoint was not disabled"
            await asyncio.sleep(0.3)
        notes = (await client.get("/v1/notifications", headers=auth(user))).json()["items"]
        assert any(n["type"] == "webhook.disabled" for n in notes), notes
        deadline = time.monotonic() + 30
        while not any("webhook" in str(m["Subject"]).lower() for m in smtp.messages):
            assert time.monotonic() < deadline, "no mail about the disabled webhook"
            await asyncio.sleep(0.2)

        # Replay once the receiver is fixed: delivered, and the endpoint enabled again.
        receiver.status["/down"] = 200
        replay = await client.post(
            f"/v1/webhooks/{bad['id']}/deliveries/{failed[0]['id']}/replay", headers=auth(user)
        )
        assert replay.status_code == 202, replay.text
        again = await wait_deliveries(
            client, user, bad["id"], lambda i: i[0]["status"] == "delivered"
        )
        assert again[0]["last_status_code"] == 200
        last = receiver.on("/down")[-1]
        assert last.headers["webhook-id"] == failed[0]["id"]
        assert json.loads(last.body)["data"]["id"] == job["id"]
        hook = (await client.get(f"/v1/webhooks/{bad['id']}", headers=auth(user))).json()
        assert hook["disabled"] is False

        # Deleting stops everything for that endpoint.
        deleted = await client.delete(f"/v1/webhooks/{good['id']}", headers=auth(user))
        assert deleted.status_code == 204
        gone = await client.get(f"/v1/webhooks/{good['id']}", headers=auth(user))
        assert gone.status_code == 404


async def _refusals(stack: Stack, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        owner = await register_and_login(client)
        other = await register_and_login(client)
        hook = await create_hook(client, owner, receiver.url(), ["job.completed"])
        paths = [
            ("GET", f"/v1/webhooks/{hook['id']}"),
            ("DELETE", f"/v1/webhooks/{hook['id']}"),
            ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
            ("POST", f"/v1/webhooks/{hook['id']}/deliveries/msg_x/replay"),
        ]
        for method, path in paths:
            response = await client.request(method, path, headers=auth(other))
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "not_found"
            response = await client.request(method, path)
            assert response.status_code == 401, (method, path)
        assert (await client.get("/v1/webhooks")).status_code == 401
        assert (await client.post("/v1/webhooks", json={})).status_code == 401
        missing = await client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/msg_missing/replay", headers=auth(owner)
        )
        assert missing.status_code == 404
        bad_bodies: list[Any] = [
            {"events": ["job.completed"]},
            {"url": receiver.url()},
            {"url": receiver.url(), "events": []},
            {"url": receiver.url(), "events": ["job.progress"]},
            {"url": receiver.url(), "events": ["nonsense"]},
            {"url": "x" * 3000, "events": ["job.completed"]},
            [],
        ]
        for body in bad_bodies:
            response = await client.post("/v1/webhooks", headers=auth(owner), json=body)
            assert response.status_code == 422, (body, response.text)
        # The gateway under test allows loopback; one beside it with OUTBOUND_ALLOW_NETS unset
        # refuses every loopback form before storing anything.
        stack.env.pop("OUTBOUND_ALLOW_NETS")
        await asyncio.to_thread(stack.start, "guarded", "gateway")
        port = receiver.port
        async with httpx.AsyncClient(base_url=stack.url("guarded"), timeout=30) as guarded:
            for url in [
                f"http://127.0.0.1:{port}/",
                f"http://localhost:{port}/",
                f"http://2130706433:{port}/",
                f"http://[::1]:{port}/",
                f"http://[::ffff:127.0.0.1]:{port}/",
                "ftp://127.0.0.1/",
                f"http://user:secret@127.0.0.1:{port}/",
            ]:
                response = await guarded.post(
                    "/v1/webhooks", headers=auth(owner), json={"url": url, "events": ["job.failed"]}
                )
                assert response.status_code == 422, (url, response.text)
                assert response.json()["code"] == "url_forbidden", url
            listed = (await guarded.get("/v1/webhooks", headers=auth(owner))).json()["items"]
            assert [h["id"] for h in listed] == [hook["id"]]
        assert receiver.requests == []


async def test_webhook_api_refusals(private_stack: StackFactory) -> None:
    async with (
        SmtpCatcher() as smtp,
        receiving() as receiver,
        private_stack(smtp.url, OUTBOUND_ALLOW_NETS="127.0.0.0/8", NETWORK_TIMEOUT="15") as stack,
    ):
        await _refusals(stack, receiver)
