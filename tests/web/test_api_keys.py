"""The page's API keys: create (shown once, copied), list, use, revoke, in a real browser."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx

from tests.support.stack import Stack
from tests.web.browser import ON_FILE_BACKEND, expect, register, screenshot

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

pytestmark = ON_FILE_BACKEND


async def test_a_key_is_created_shown_once_copied_and_revoked(
    stack: Stack, page: Page, context: BrowserContext
) -> None:
    origin = stack.gateway_url
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=origin)
    await register(page, origin)
    keys = page.locator("#api-keys")
    await expect(keys.get_by_text("No API keys yet.")).to_be_visible()

    await page.locator("#api-key-name").fill("backup script")
    await keys.get_by_label("webhooks:write", exact=False).check()
    await keys.get_by_role("button", name="Create key").click()
    shown = page.locator("#api-key-value")
    await expect(shown).to_have_value(re.compile(r"^v2m_[A-Za-z0-9_-]{40,}$"))
    key = await shown.input_value()
    await keys.get_by_role("button", name="Copy").click()
    await expect(keys.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key
    row = keys.locator("li.api-key")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("backup script")
    await expect(row).to_contain_text("jobs:read, jobs:write, webhooks:write")
    await expect(row).to_contain_text("never used")
    assert key not in await keys.locator("ul").inner_text()
    await screenshot(page, "api-keys", full_page=True)

    async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
        headers = {"authorization": f"Bearer {key}"}
        assert (await client.get("/v1/jobs", headers=headers)).status_code == 200
        # A reload lists the key again, never the key itself.
        await page.reload()
        await expect(row).to_contain_text("last used")
        await expect(page.locator("#api-key-value")).to_have_count(0)

        await row.get_by_role("button", name="Revoke backup script").click()
        await expect(row).to_have_count(0)
        await expect(keys.get_by_text("No API keys yet.")).to_be_visible()
        refused = await client.get("/v1/jobs", headers=headers)
        # This gateway may remember the key as good for a few seconds: it is refused after.
        for _ in range(50):
            if refused.status_code == 401:
                break
            await page.wait_for_timeout(200)
            refused = await client.get("/v1/jobs", headers=headers)
        assert refused.status_code == 401
