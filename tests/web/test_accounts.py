"""The web page's account features in a real browser: proving an address, a forgotten
password, invites, and the admin's view."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

import httpx

from tests.conftest import StackFactory
from tests.support.smtp import SmtpCatcher, text_body
from tests.web.browser import PASSWORD, expect, log_in, new_email, open_page, register

if TYPE_CHECKING:
    from playwright.async_api import Page

NEW_PASSWORD = "another long passphrase"


async def mailed_token(
    smtp: SmtpCatcher, recipient: str, action: str, other_than: str | None = None
) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in reversed(smtp.messages):
            found = re.search(rf"#{action}=([A-Za-z0-9_-]+)", text_body(message))
            if recipient in str(message["To"]) and found and found.group(1) != other_than:
                return found.group(1)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {action} mail to {recipient}")


async def test_an_admin_runs_accounts_from_the_page(
    page: Page, private_stack: StackFactory, smtp: SmtpCatcher
) -> None:
    boss = new_email()
    async with (
        private_stack(
            smtp.url,
            ADMIN_EMAILS=boss,
            VERIFY_EMAILS="true",
            REGISTRATION="invite",
            NETWORK_TIMEOUT="10",
        ) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as api,
    ):
        base = stack.gateway_url
        await register(page, base, boss)  # ADMIN_EMAILS register whatever REGISTRATION says
        await expect(page.locator("#verify-hint")).to_be_visible()

        # The first mail went astray: the page asks for another link, and that one works.
        lost = await mailed_token(smtp, boss, "verify")
        await page.get_by_role("button", name="Send the link again").click()
        await expect(page.locator("#verify-resend-status")).to_have_text(re.compile("on its way"))
        token = await mailed_token(smtp, boss, "verify", other_than=lost)
        await page.goto(f"{base}/#verify={token}")
        await expect(page.locator("#account-notice")).to_contain_text("address is confirmed")
        assert "#verify" not in page.url  # the token leaves the address bar at once
        await expect(page.locator("#verify-hint")).to_have_count(0)

        await page.get_by_role("button", name="Admin").click()
        await expect(page.locator("#admin-users tr[data-user]")).to_have_count(1)
        await page.get_by_role("button", name="New invite").click()
        invite = await page.locator("#admin-invite-code").text_content()
        assert invite
        guest = new_email()
        without = await api.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD}
        )
        assert without.json()["code"] == "invite_required"
        joined = await api.post(
            "/v1/auth/register", json={"email": guest, "password": PASSWORD, "invite": invite}
        )
        assert joined.status_code == 201, joined.text

        await page.get_by_role("button", name="Admin").click()  # close and open: reloaded
        await page.get_by_role("button", name="Admin").click()
        row = page.locator(f'#admin-users tr[data-user="{guest}"]')
        await row.get_by_label(f"Active jobs limit of {guest}").fill("3")
        await row.get_by_role("button", name="Save limits").click()
        await expect(page.locator("#admin-status")).to_contain_text("Limits saved")
        await row.get_by_role("button", name="Disable").click()
        await expect(page.locator("#admin-status")).to_contain_text("Disabled")
        refused = await api.post("/v1/auth/login", data={"username": guest, "password": PASSWORD})
        assert refused.json()["code"] == "account_disabled"
        listed = await api.get(
            "/v1/admin/users",
            headers={"Authorization": "Bearer " + await admin_token(api, boss)},
        )
        mine = next(u for u in listed.json()["items"] if u["email"] == guest)
        assert mine["limits"]["max_active_jobs"] == 3


async def admin_token(api: httpx.AsyncClient, email: str) -> str:
    answer = await api.post("/v1/auth/login", data={"username": email, "password": PASSWORD})
    token: str = answer.json()["access_token"]
    return token


async def test_a_forgotten_password_is_reset_from_the_page(
    page: Page, private_stack: StackFactory, smtp: SmtpCatcher
) -> None:
    email = new_email()
    async with (
        private_stack(smtp.url, VERIFY_EMAILS="true", NETWORK_TIMEOUT="10") as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as api,
    ):
        created = await api.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201
        await open_page(page, stack.gateway_url)
        await page.get_by_label("Email").fill(email)
        await page.get_by_role("button", name="Forgot your password?").click()
        await expect(page.locator("#account-notice")).to_contain_text("a mail with a link")

        token = await mailed_token(smtp, email, "reset")
        await page.goto(f"{stack.gateway_url}/#reset={token}")
        await page.get_by_label("New password").fill("short")
        await page.get_by_role("button", name="Set password").click()
        await expect(page.locator("#reset-error")).to_contain_text("at least 8")
        await page.get_by_label("New password").fill(NEW_PASSWORD)
        await page.get_by_role("button", name="Set password").click()
        await expect(page.locator("#account-notice")).to_contain_text("password is changed")
        await log_in(page, email, NEW_PASSWORD)
        await expect(page.locator("#user-email")).to_have_text(email)
