"""The operator's controls and proven addresses, through the gateway of a whole stack."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from email.message import EmailMessage

import httpx

from tests.conftest import StackFactory
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher, text_body

PASSWORD = "correct horse battery staple"


async def sign_up(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    registered = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return await log_in(client, email)


async def log_in(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    answer = await client.post("/v1/auth/login", data={"username": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    return {"email": email, "authorization": f"Bearer {tokens['access_token']}", **tokens}


async def verify_from_mail(client: httpx.AsyncClient, smtp: SmtpCatcher, email: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in smtp.messages:
            found = re.search(r"#verify=([A-Za-z0-9_-]+)", text_body(message))
            if email in str(message["To"]) and found:
                answer = await client.post("/v1/auth/verify", json={"token": found.group(1)})
                assert answer.status_code == 200, answer.text
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no verification mail to {email}")


async def prove_address(
    client: httpx.AsyncClient, smtp: SmtpCatcher, user: dict[str, str]
) -> dict[str, str]:
    """Follow the verification mail, then refresh: the new access token says it is proven."""
    await verify_from_mail(client, smtp, user["email"])
    tokens = await client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert tokens.status_code == 200, tokens.text
    fresh = tokens.json()
    return {**user, **fresh, "authorization": f"Bearer {fresh['access_token']}"}


async def job_mail_to(smtp: SmtpCatcher, email: str, timeout: float = 60) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in smtp.messages:
            if email in str(message["To"]) and "/v1/downloads/" in text_body(message):
                return message
        await asyncio.sleep(0.2)
    raise AssertionError(f"no job mail to {email}")


def job_mails_to(smtp: SmtpCatcher, email: str) -> int:
    return sum(1 for m in smtp.messages if email in str(m["To"]) and "#verify=" not in text_body(m))


async def test_job_mails_reach_proven_addresses_only(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    clip = media.h264_aac(2)
    async with (
        private_stack(smtp.url, VERIFY_EMAILS="true", NETWORK_TIMEOUT="10") as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        owner = f"owner-{uuid.uuid4().hex[:8]}@example.com"
        squatter = f"squatter-{uuid.uuid4().hex[:8]}@example.com"
        await sign_up(client, owner)
        await verify_from_mail(client, smtp, owner)
        proven = await log_in(client, owner)  # a token issued after the proof says so
        unproven = await sign_up(client, squatter)

        for user in (proven, unproven):
            job_id = (await upload(client, user, clip)).json()["id"]
            assert (await wait_final(client, user, job_id))["status"] == "completed"
        deadline = time.monotonic() + 30
        while job_mails_to(smtp, owner) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert job_mails_to(smtp, owner) == 1
        await asyncio.sleep(2)
        assert job_mails_to(smtp, squatter) == 0
        # In-app notifications always work.
        notes = await client.get("/v1/notifications", headers=auth(unproven))
        assert len(notes.json()["items"]) == 1

        # The address is taken back: the reset mail proves it and ends the squatter's sessions.
        assert (
            await client.post("/v1/auth/password-reset", json={"email": squatter})
        ).status_code == 202


async def test_an_admin_disables_an_account(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    boss = f"boss-{uuid.uuid4().hex[:8]}@example.com"
    clip = media.h264_aac(2)
    long_source = media.long_tone()
    async with (
        private_stack(
            smtp.url, CONVERTER_CONCURRENCY="1", ADMIN_EMAILS=boss, NETWORK_TIMEOUT="10"
        ) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        admin = await sign_up(client, boss)
        user = await sign_up(client, f"user-{uuid.uuid4().hex[:8]}@example.com")
        user_id = (await client.get("/v1/auth/me", headers=auth(user))).json()["id"]

        done = (await upload(client, user, clip)).json()["id"]
        finished = await wait_final(client, user, done)
        link = finished["output"]["stream_url"]
        assert (await client.get(link)).status_code == 200

        # Guards, through the gateway.
        for method, path, body in (
            ("GET", "/v1/admin/users", None),
            ("PATCH", f"/v1/admin/users/{user_id}", {"disabled": True}),
            ("POST", "/v1/admin/invites", {}),
        ):
            assert (await client.request(method, path, json=body)).status_code == 401
            forbidden = await client.request(method, path, json=body, headers=auth(user))
            assert forbidden.status_code == 403
            assert forbidden.json()["code"] == "admin_required"
        missing = await client.patch(
            "/v1/admin/users/" + "0" * 32, json={"disabled": True}, headers=auth(admin)
        )
        assert missing.status_code == 404
        bad = await client.patch(
            f"/v1/admin/users/{user_id}", json={"limits": {"jobs_per_day": -3}}, headers=auth(admin)
        )
        assert bad.status_code == 422

        listed = (await client.get("/v1/admin/users", headers=auth(admin))).json()["items"]
        mine = next(item for item in listed if item["id"] == user_id)
        assert mine["usage"]["jobs_today"] == 1
        assert mine["disabled"] is False

        running = (await upload(client, user, long_source)).json()["id"]
        queued = (await upload(client, user, clip)).json()["id"]
        disabled = await client.patch(
            f"/v1/admin/users/{user_id}", json={"disabled": True}, headers=auth(admin)
        )
        assert disabled.status_code == 200, disabled.text
        for job_id in (running, queued):
            assert (await wait_final(client, user, job_id))["status"] == "cancelled"
        gone = await client.get(link)
        assert gone.status_code == 403
        assert gone.json()["code"] == "account_disabled"
        refused = await client.post(
            "/v1/auth/login", data={"username": user["email"], "password": PASSWORD}
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "account_disabled"
