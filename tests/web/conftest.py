"""Fixtures of the real-browser tests: the services as real processes (the e2e `stack`; each
test module narrows it to the `file` backend with `ON_FILE_BACKEND`) and one headless Chromium
for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import mariadb_url, smtp, stack
from tests.web.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, why_no_browser

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

__all__ = ["browser", "context", "mariadb_url", "page", "smtp", "stack"]


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    missing = why_no_browser()
    if missing:
        pytest.fail(missing, pytrace=False)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport=DESKTOP, accept_downloads=True, locale="en-GB")
    ctx.set_default_timeout(15_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    errors: list[str] = []
    tab = await context.new_page()
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # The gateway's Content-Security-Policy allows no inline script or style: report any breach.
    tab.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield tab
    assert not errors, f"errors in the page: {errors}"
