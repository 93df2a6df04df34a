"""Headless Debian Chromium driven by Playwright, and the steps the page tests share."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

try:
    from playwright.async_api import expect

    PLAYWRIGHT_MISSING: str | None = None
except ImportError as exc:  # the fixtures turn this into a clear failure, not a skip
    PLAYWRIGHT_MISSING = str(exc)

    def _needs_playwright(*_: object, **__: object) -> None:
        pytest.fail(str(why_no_browser()), pytrace=False)

    # Keeps `from tests.web.browser import expect` importable, so the tests fail with the reason.
    globals()["expect"] = _needs_playwright

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page, ViewportSize

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "DESKTOP",
    "ON_FILE_BACKEND",
    "PASSWORD",
    "PHONE",
    "expect",
    "job_card",
    "log_in",
    "new_email",
    "open_page",
    "register",
    "screenshot",
    "upload",
    "wait_status",
    "why_no_browser",
]

REPO = Path(__file__).resolve().parents[2]
# The committed screenshots change only on purpose (UPDATE_SCREENSHOTS=1); otherwise the states
# are still captured, into a scratch directory.
SCREENSHOTS = (
    REPO / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "video2mp3-screenshots"
)
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]
PASSWORD = "correct horse battery staple"
DESKTOP: ViewportSize = {"width": 1120, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 780}
CONVERT_TIMEOUT_MS = 90_000
# The e2e `stack` runs on both blob backends; the page does not care, so one is enough here.
ON_FILE_BACKEND = pytest.mark.parametrize("stack", ["file"], indirect=True)


def why_no_browser() -> str | None:
    """What is missing to run the page tests, with how to fix it; None when all is there."""
    if PLAYWRIGHT_MISSING is not None:
        return (
            f"Playwright is not importable ({PLAYWRIGHT_MISSING}): add `playwright` to the dev "
            "dependency group (never run `playwright install`; the tests use Debian's chromium)"
        )
    if not CHROMIUM.exists():
        return (
            f"no Chromium at {CHROMIUM}: install Debian's package first "
            "(`apt-get install -y chromium`), or point CHROMIUM_PATH at one"
        )
    return None


def new_email() -> str:
    return f"web-{uuid.uuid4().hex[:10]}@example.com"


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(
        path=SCREENSHOTS / f"{name}.png", full_page=full_page, animations="disabled"
    )


async def open_page(page: Page, base_url: str) -> None:
    await page.goto(base_url + "/")
    await expect(page.locator("html[data-ready=true]")).to_be_attached()


async def register(page: Page, base_url: str, email: str | None = None) -> str:
    """Create an account through the form; the page logs straight in."""
    email = email or new_email()
    await open_page(page, base_url)
    await page.get_by_role("button", name="Create an account").click()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Convert videos to MP3")).to_be_visible()
    await expect(page.locator("#user-email")).to_have_text(email)
    return email


async def log_in(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in", exact=True).click()


def job_card(page: Page, filename: str) -> Locator:
    return page.locator("li.job", has=page.get_by_role("heading", name=filename, exact=True))


async def wait_status(card: Locator, status: str, timeout: float = CONVERT_TIMEOUT_MS) -> None:
    await expect(card).to_have_attribute("data-status", status, timeout=timeout)


async def upload(page: Page, *files: Path) -> None:
    await page.locator("#file-input").set_input_files(list(files))
