"""A URL import on the web page: its download shows as "Fetching N%", then its conversion."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import StackFactory
from tests.support.asgi import serving
from tests.support.media import MediaFactory
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher
from tests.web.browser import PASSWORD, expect, job_card, register, wait_status

if TYPE_CHECKING:
    from playwright.async_api import Page

PIECES = 8
PAUSE = 0.4  # the importer reports its progress every 0.5 s: a 3 s download gives several

# Every text the status pills show, in order, sampled faster than the page repaints.
RECORD_LABELS = """() => {
  window.labels = [];
  setInterval(() => {
    for (const pill of document.querySelectorAll(".status-pill")) {
      if (window.labels.at(-1) !== pill.textContent) window.labels.push(pill.textContent);
    }
  }, 10);
}"""


def slow_source(clip: bytes) -> Starlette:
    async def trickle(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            step = len(clip) // PIECES + 1
            for start in range(0, len(clip), step):
                yield clip[start : start + step]
                await asyncio.sleep(PAUSE)

        return StreamingResponse(
            body(), media_type="audio/flac", headers={"Content-Length": str(len(clip))}
        )

    return Starlette(routes=[Route("/slow/talk.flac", trickle)])


async def test_an_import_shows_its_download_then_its_conversion(
    private_stack: StackFactory, page: Page, media: MediaFactory
) -> None:
    clip = media.tone(30, 0.5, "talk.flac").read_bytes()
    port = free_port()
    config = uvicorn.Config(slow_source(clip), host="127.0.0.1", port=port, log_level="warning")
    async with (
        serving(config),
        SmtpCatcher() as smtp,
        private_stack(smtp.url, OUTBOUND_ALLOW_NETS="127.0.0.1/32", NETWORK_TIMEOUT="15") as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client,
    ):
        email = await register(page, stack.gateway_url)
        await page.evaluate(RECORD_LABELS)
        login = await client.post("/v1/auth/login", data={"username": email, "password": PASSWORD})
        token = login.json()["access_token"]
        started = await client.post(
            "/v1/jobs",
            headers={"Authorization": f"Bearer {token}"},
            json={"source_url": f"http://127.0.0.1:{port}/slow/talk.flac"},
        )
        assert started.status_code == 202, started.text

        card = job_card(page, "talk.flac")
        pill = card.locator(".status-pill")
        await expect(pill).to_have_text(re.compile(r"^Fetching [1-9]\d?%$"), timeout=20_000)
        assert await card.locator("progress").get_attribute("value") not in (None, "0")
        await wait_status(card, "completed")
        labels: list[str] = await page.evaluate("window.labels")

    fetched = [n for n, label in enumerate(labels) if label.startswith("Fetching")]
    assert fetched, labels
    # Before the download ends nothing claims a conversion; after it none starts at 100 %.
    assert not any(label.startswith("Converting") for label in labels[: fetched[-1]]), labels
    converting = [label for label in labels if label.startswith("Converting")]
    assert "Converting 100%" not in converting[:1], labels
    assert labels[-1] == "Done", labels
