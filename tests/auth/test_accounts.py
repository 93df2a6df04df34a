"""Accounts the operator controls and addresses that are proven, through the auth app."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from shared.settings import Settings
from tests.auth.conftest import PASSWORD, login, make_settings, new_email, register, running_auth
from tests.support.smtp import SmtpCatcher, text_body

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCatcher]:
    async with SmtpCatcher() as catcher:
        yield catcher


def settings_with(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher, **extra: object
) -> Settings:
    return make_settings(database_url, tmp_path / "var", smtp_url=smtp.url, **extra)


async def bearer(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def mailed_token(smtp: SmtpCatcher, recipient: str, action: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in smtp.messages:
            if recipient in str(message["To"]):
                found = re.search(rf"#{action}=([A-Za-z0-9_-]+)", text_body(message))
                if found:
                    return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {action} mail to {recipient}")


def mails_to(smtp: SmtpCatcher, recipient: str) -> int:
    return sum(1 for m in smtp.messages if recipient in str(m["To"]))


async def test_registration_modes_and_invites(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    boss = new_email()
    # The database lives for the session: other tests' accounts exist, so the admin is named.
    closed = settings_with(database_url, tmp_path, smtp, registration="closed", admin_emails=boss)
    async with running_auth(closed) as client:
        refused = await client.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD}
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "registration_closed"
        await register(client, boss)  # ADMIN_EMAILS may register in every mode
        me = await client.get("/v1/auth/me", headers=await bearer(client, boss))
        assert me.json()["admin"] is True

    invite_only = settings_with(
        database_url, tmp_path, smtp, registration="invite", admin_emails=boss
    )
    async with running_auth(invite_only) as client:
        admin = await bearer(client, boss)
        for body in ({}, {"invite": "not-an-invite"}):
            answer = await client.post(
                "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, **body}
            )
            assert answer.status_code == 403
            assert answer.json()["code"] == "invite_required"
        made = await client.post("/v1/admin/invites", json={}, headers=admin)
        assert made.status_code == 201, made.text
        invite = made.json()["invite"]
        guest = new_email()
        welcomed = await client.post(
            "/v1/auth/register", json={"email": guest, "password": PASSWORD, "invite": invite}
        )
        assert welcomed.status_code == 201, welcomed.text
        # Single use.
        again = await client.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "invite": invite}
        )
        assert again.json()["code"] == "invite_required"
        # A guest is no admin.
        me = await client.get("/v1/auth/me", headers=await bearer(client, guest))
        assert me.json()["admin"] is False
        # Invites expire.
        short = await client.post(
            "/v1/admin/invites", json={"expires_in_hours": 0.0003}, headers=admin
        )
        await asyncio.sleep(1.5)
        late = await client.post(
            "/v1/auth/register",
            json={"email": new_email(), "password": PASSWORD, "invite": short.json()["invite"]},
        )
        assert late.status_code == 403
        assert late.json()["code"] == "invite_required"


async def test_admin_api_guards_and_bad_input(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    boss, someone = new_email(), new_email()
    async with running_auth(
        settings_with(database_url, tmp_path, smtp, admin_emails=boss)
    ) as client:
        await register(client, boss)
        someone_id = await register(client, someone)
        admin, user = await bearer(client, boss), await bearer(client, someone)
        calls = [
            ("GET", "/v1/admin/users", None),
            ("PATCH", f"/v1/admin/users/{someone_id}", {"disabled": True}),
            ("POST", "/v1/admin/invites", {}),
        ]
        for method, path, body in calls:
            anonymous = await client.request(method, path, json=body)
            assert anonymous.status_code == 401, (path, anonymous.text)
            not_admin = await client.request(method, path, json=body, headers=user)
            assert not_admin.status_code == 403, (path, not_admin.text)
            assert not_admin.json()["code"] == "admin_required"
        missing = await client.patch("/v1/admin/users/" + "0" * 32, json={}, headers=admin)
        assert missing.status_code == 404
        bad_bodies = [
            {"limits": {"max_active_jobs": -1}},
            {"limits": {"max_jobs": 3}},
            {"disabled": "maybe"},
            {"owner": True},
        ]
        for bad in bad_bodies:
            answer = await client.patch(f"/v1/admin/users/{someone_id}", json=bad, headers=admin)
            assert answer.status_code == 422, (bad, answer.text)
        for bad in ({"expires_in_hours": 0}, {"expires_in_hours": "soon"}):
            answer = await client.post("/v1/admin/invites", json=bad, headers=admin)
            assert answer.status_code == 422, (bad, answer.text)
        assert (await client.get("/v1/admin/users?limit=0", headers=admin)).status_code == 422
        boss_id = (await client.get("/v1/auth/me", headers=admin)).json()["id"]
        myself = await client.patch(
            f"/v1/admin/users/{boss_id}", json={"disabled": True}, headers=admin
        )
        assert myself.status_code == 422


async def test_limits_and_disabling(database_url: str, tmp_path: Path, smtp: SmtpCatcher) -> None:
    boss, someone = new_email(), new_email()
    async with running_auth(
        settings_with(database_url, tmp_path, smtp, admin_emails=boss)
    ) as client:
        await register(client, boss)
        someone_id = await register(client, someone)
        admin = await bearer(client, boss)
        tokens = (await login(client, someone)).json()

        changed = await client.patch(
            f"/v1/admin/users/{someone_id}",
            json={"limits": {"max_active_jobs": 2, "storage_bytes": 0}},
            headers=admin,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["limits"] == {
            "max_active_jobs": 2,
            "storage_bytes": 0,
            "jobs_per_day": None,
        }
        reset = await client.patch(
            f"/v1/admin/users/{someone_id}",
            json={"limits": {"max_active_jobs": None}},
            headers=admin,
        )
        assert reset.json()["limits"]["max_active_jobs"] is None
        assert reset.json()["limits"]["storage_bytes"] == 0
        internal = await client.get(f"/internal/v1/accounts/{someone_id}")
        assert internal.json()["limits"]["storage_bytes"] == 0
        assert (await client.get("/internal/v1/accounts/" + "0" * 32)).status_code == 404

        listed = await client.get("/v1/admin/users", headers=admin)
        assert someone in [item["email"] for item in listed.json()["items"]]

        disabled = await client.patch(
            f"/v1/admin/users/{someone_id}", json={"disabled": True}, headers=admin
        )
        assert disabled.json()["disabled"] is True
        refused = await login(client, someone)
        assert refused.status_code == 403
        assert refused.json()["code"] == "account_disabled"
        # The wrong password still says only that: a stranger learns nothing of the account.
        assert (await login(client, someone, "wrong password")).status_code == 401
        no_refresh = await client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert no_refresh.status_code == 403
        assert no_refresh.json()["code"] == "account_disabled"

        await client.patch(f"/v1/admin/users/{someone_id}", json={"disabled": False}, headers=admin)
        assert (await login(client, someone)).status_code == 200
        # Sessions from before the disabling stay ended.
        stale = await client.post(
            "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert stale.status_code == 401


async def test_verification_mail_proves_the_address(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    email = new_email()
    async with running_auth(settings_with(database_url, tmp_path, smtp)) as client:
        await register(client, email)
        access = (await login(client, email)).json()["access_token"]
        assert jwt.decode(access, options={"verify_signature": False})["email_verified"] is False
        token = await mailed_token(smtp, email, "verify")

        for bad in ("", "x" * 300, "not-a-token"):
            answer = await client.post("/v1/auth/verify", json={"token": bad})
            assert answer.status_code in (400, 422), answer.text
        verified = await client.post("/v1/auth/verify", json={"token": token})
        assert verified.status_code == 200, verified.text
        assert verified.json()["email_verified"] is True
        used = await client.post("/v1/auth/verify", json={"token": token})
        assert used.status_code == 400
        assert used.json()["code"] == "invalid_token"
        access = (await login(client, email)).json()["access_token"]
        assert jwt.decode(access, options={"verify_signature": False})["email_verified"] is True


async def test_a_new_verification_link_on_request(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    email = new_email()
    async with running_auth(settings_with(database_url, tmp_path, smtp)) as client:
        await register(client, email)
        first = await mailed_token(smtp, email, "verify")
        headers = await bearer(client, email)
        assert (await client.post("/v1/auth/verify/resend")).status_code == 401
        again = await client.post("/v1/auth/verify/resend", headers=headers)
        assert again.status_code == 202, again.text
        await smtp.wait_for(2)
        tokens = [
            re.search(r"#verify=([A-Za-z0-9_-]+)", text_body(m)).group(1)  # type: ignore[union-attr]
            for m in smtp.messages
            if email in str(m["To"])
        ]
        assert len(tokens) == 2
        assert tokens[1] != first
        # Past the window's few, the answer says when to ask again.
        for _ in range(2):
            assert (await client.post("/v1/auth/verify/resend", headers=headers)).status_code == 202
        refused = await client.post("/v1/auth/verify/resend", headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "too_many_attempts"
        assert int(refused.headers["retry-after"]) >= 1
        # The new link proves the address; then there is nothing left to send.
        verified = await client.post("/v1/auth/verify", json={"token": tokens[1]})
        assert verified.status_code == 200, verified.text
        proven = await client.post("/v1/auth/verify/resend", headers=await bearer(client, email))
        assert proven.status_code == 409
        assert proven.json()["code"] == "already_verified"


async def test_password_reset_takes_the_address_back(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    owner, nobody = new_email(), new_email()
    settings = settings_with(database_url, tmp_path, smtp, verify_emails=False)
    async with running_auth(settings) as client:
        await register(client, owner)
        squatter_session = (await login(client, owner)).json()

        answers = []
        for address in (owner, nobody):
            started = time.perf_counter()
            answer = await client.post("/v1/auth/password-reset", json={"email": address})
            answers.append((answer.status_code, answer.json(), time.perf_counter() - started))
        assert answers[0][:2] == answers[1][:2]
        assert answers[0][0] == 202
        assert abs(answers[0][2] - answers[1][2]) < 0.5  # no hash, no mail in the request
        bad = await client.post("/v1/auth/password-reset", json={"email": "not an address"})
        assert bad.status_code == 422

        token = await mailed_token(smtp, owner, "reset")
        await asyncio.sleep(0.5)
        assert mails_to(smtp, nobody) == 0
        weak = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": "short"}
        )
        assert weak.status_code == 422
        wrong = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": "nope", "password": NEW_PASSWORD}
        )
        assert wrong.status_code == 400
        done = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
        )
        assert done.status_code == 204, done.text
        again = await client.post(
            "/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
        )
        assert again.status_code == 400
        # Every session from before is over; only the new password opens the account.
        old = await client.post(
            "/v1/auth/refresh", json={"refresh_token": squatter_session["refresh_token"]}
        )
        assert old.status_code == 401
        assert (await login(client, owner)).status_code == 401
        assert (await login(client, owner, NEW_PASSWORD)).status_code == 200


async def test_reset_mails_to_one_address_are_few(
    database_url: str, tmp_path: Path, smtp: SmtpCatcher
) -> None:
    victim = new_email()
    settings = settings_with(database_url, tmp_path, smtp, verify_emails=False)
    async with running_auth(settings) as client:
        await register(client, victim)
        for _ in range(6):
            answer = await client.post("/v1/auth/password-reset", json={"email": victim})
            assert answer.status_code == 202
        await smtp.wait_for(3)
        await asyncio.sleep(1)
        assert mails_to(smtp, victim) == 3
