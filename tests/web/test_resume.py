"""The page uploads over tus: a reload in the middle of an upload, then the same file picked
again, goes on from the server's offset instead of sending the file again."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

from tests.support.media import MediaFactory
from tests.support.stack import Stack
from tests.web.browser import ON_FILE_BACKEND, job_card, open_page, register, upload
from tests.web.browser import wait_status as wait_job_status

if TYPE_CHECKING:
    from playwright.async_api import Page, Request

pytestmark = ON_FILE_BACKEND

UPLOADS_KEY = "video2mp3.uploads"
SESSION_KEY = "video2mp3.session"


async def test_a_reload_mid_upload_resumes_from_the_servers_offset(
    stack: Stack, page: Page, media: MediaFactory
) -> None:
    await register(page, stack.gateway_url)
    clip = media.h264_aac(900, size="64x48")
    size = clip.stat().st_size
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 5, "downloadThroughput": -1, "uploadThroughput": size / 8},
    )
    await upload(page, clip)
    await page.wait_for_function(
        "([n]) => Number(document.querySelector('li.upload')?.dataset.loaded || 0) > n",
        arg=[size // 4],
    )
    await page.reload()
    await open_page(page, stack.gateway_url)
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    (url,) = json.loads(await page.evaluate(f"localStorage.getItem({UPLOADS_KEY!r})")).values()
    token = json.loads(await page.evaluate(f"localStorage.getItem({SESSION_KEY!r})"))
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token['access_token']}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        kept = int((await client.head(url, headers=headers)).headers["Upload-Offset"])
    assert 0 < kept < size

    offsets: list[int] = []

    def on_request(request: Request) -> None:
        if request.method == "PATCH":
            offsets.append(int(request.headers["upload-offset"]))

    page.on("request", on_request)
    await upload(page, clip)
    card = job_card(page, clip.name)
    await wait_job_status(card, "completed")
    # Resumed past the start (once the server had settled what the reload cut off).
    assert offsets, "no PATCH after the reload"
    assert min(offsets) >= kept, (offsets, kept)
    assert await page.evaluate(f"localStorage.getItem({UPLOADS_KEY!r})") == "{}"
