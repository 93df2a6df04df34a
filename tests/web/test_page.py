"""The web page in a real browser: accounts, upload, live progress, playback, download."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack
from tests.web.browser import (
    DESKTOP,
    ON_FILE_BACKEND,
    PASSWORD,
    PHONE,
    expect,
    job_card,
    log_in,
    new_email,
    open_page,
    register,
    screenshot,
    upload,
    wait_status,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page, Response, WebSocket

pytestmark = ON_FILE_BACKEND

SESSION_KEY = "video2mp3.session"
# The signed, token-free link of a finished job that the player and the download use.
STREAM_URL = re.compile(r"^/v1/downloads/[^/]+$")


def collect_ws_messages(page: Page) -> list[dict[str, Any]]:
    """Every JSON message the page receives over its WebSockets, in order."""
    messages: list[dict[str, Any]] = []

    def on_socket(socket: WebSocket) -> None:
        def on_frame(payload: str | bytes) -> None:
            with contextlib.suppress(ValueError):
                messages.append(json.loads(payload))

        socket.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    return messages


def collect_stream_responses(page: Page) -> list[tuple[int, str | None]]:
    """(status, Range header) of every response to a signed `/v1/downloads/` link."""
    seen: list[tuple[int, str | None]] = []

    async def on_response(response: Response) -> None:
        if "/v1/downloads/" in response.url:
            seen.append((response.status, await response.request.header_value("range")))

    page.on("response", on_response)
    return seen


async def stored_session(page: Page) -> dict[str, Any] | None:
    raw = await page.evaluate(f"localStorage.getItem({SESSION_KEY!r})")
    return json.loads(raw) if raw else None


async def download_and_check(page: Page, link: Locator, folder: Path) -> None:
    """Click a download link: the file saved is an MP3 of the 5 s test clip."""
    async with page.expect_download() as info:
        await link.click()
    download = await info.value
    assert download.suggested_filename.endswith(".mp3")
    folder.mkdir()
    target = folder / download.suggested_filename
    await download.save_as(target)
    decoded = decode(target)
    assert decoded.codec == "mp3"
    assert abs(decoded.duration - 5.0) < 0.2


async def test_login_page_shows_errors_inline(stack: Stack, page: Page) -> None:
    await open_page(page, stack.gateway_url)
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await screenshot(page, "login")

    # Wrong password for an account that does not exist.
    await log_in(page, new_email(), "not the password at all")
    await expect(page.locator("#auth-error")).to_have_text("Wrong email or password.")
    await expect(page.get_by_role("alert")).to_contain_text("Wrong email or password")

    # Too weak, then taken.
    await page.get_by_role("button", name="Create an account").click()
    email = new_email()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill("short")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#auth-password-error")).to_contain_text("at least 8 characters")
    await expect(page.get_by_label("Password", exact=True)).to_have_attribute(
        "aria-invalid", "true"
    )
    await expect(page.get_by_label("Password", exact=True)).to_be_focused()

    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        taken = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert taken.status_code == 201
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#auth-email-error")).to_contain_text("already exists")
    await screenshot(page, "register-error")

    # The right password logs in.
    await page.locator("#auth-switch").click()  # back to logging in
    await log_in(page, email)
    await expect(page.locator("#user-email")).to_have_text(email)


async def test_convert_listen_and_download(
    stack: Stack, page: Page, media: MediaFactory, tmp_path: Path
) -> None:
    messages = collect_ws_messages(page)
    streamed = collect_stream_responses(page)
    await register(page, stack.gateway_url)
    await expect(page.locator("#history-empty")).to_be_visible()
    await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    # The socket is opened with a single-use ticket: no token in a URL that proxies may log.
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    await page.reload()
    await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    assert sockets, "no WebSocket opened"
    assert all("ticket=" in url and "access_token" not in url for url in sockets), sockets
    await screenshot(page, "empty")

    video = media.h264_aac(5)
    await upload(page, video)
    card = job_card(page, video.name)
    await wait_status(card, "completed")
    await expect(page.locator("#history-empty")).to_be_hidden()
    await expect(card.locator(".status-pill")).to_have_text("Done")

    # The progress came live from the WebSocket and reached 100.
    job_id = await card.get_attribute("data-id")
    progress = [
        m["progress"]
        for m in messages
        if m.get("job_id") == job_id and m.get("type") == "job.progress"
    ]
    assert progress, messages
    assert progress[-1] == 100
    assert progress == sorted(progress)
    assert messages[0]["type"] == "snapshot"
    assert await card.get_attribute("data-progress") == "100"

    # The player streams the signed link (no blob of the whole file), and only its metadata
    # until it plays; it plays it, and its duration is the video's.
    audio = card.locator("audio")
    await expect(audio).to_have_attribute("src", STREAM_URL, timeout=30_000)
    await expect(audio).to_have_attribute("preload", "metadata")
    assert not (await audio.evaluate("a => a.currentSrc")).startswith("blob:")
    duration = await audio.evaluate(
        """a => new Promise((resolve, reject) => {
             if (a.readyState >= 1) return resolve(a.duration);
             a.addEventListener("loadedmetadata", () => resolve(a.duration), {once: true});
             a.addEventListener("error", () => reject(new Error(String(a.error?.message))));
           })"""
    )
    assert abs(duration - 5.0) < 0.35, duration
    played = await audio.evaluate(
        """async a => {
             await a.play();
             await new Promise(r => setTimeout(r, 800));
             const t = a.currentTime;
             a.pause();
             a.currentTime = 0;
             return t;
           }"""
    )
    assert played > 0.2, played

    # The link serves ranges: the player asked for them, and seeking lands where it was sent.
    landed = await audio.evaluate(
        """async a => {
             a.currentTime = 3.5;
             if (a.seeking) await new Promise(r => a.addEventListener("seeked", r, {once: true}));
             await a.play();
             await new Promise(r => setTimeout(r, 300));
             const t = a.currentTime;
             a.pause();
             return t;
           }"""
    )
    assert 3.4 <= landed <= 5.0, landed
    assert any(status == 206 for status, _ in streamed), streamed
    assert any(ranged for _, ranged in streamed), streamed

    # The meta line shows duration and sizes.
    await expect(card.locator(".job-meta")).to_contain_text("0:05")
    await expect(card.locator(".meta-output")).to_contain_text("MP3")

    # The badge counts the unread notification of the finished job.
    await expect(page.locator("#notification-badge")).to_have_text("1", timeout=20_000)
    await screenshot(page, "done")

    # Download through the download_link (the same signed URL): a real file of the same duration.
    download_link = card.get_by_role("link", name=re.compile(r"^Download"))
    assert await download_link.get_attribute("href") == await audio.get_attribute("src")
    await expect(download_link).to_have_attribute("download", re.compile(r"\.mp3$"))
    await download_and_check(page, download_link, tmp_path / "first")

    # An hour on, the link has expired: the page fetches the job for a new one before it
    # downloads, and moves the paused player over to it too.
    await page.evaluate("""() => { const now = Date.now; Date.now = () => now() + 51 * 60_000; }""")
    old_url = await download_link.get_attribute("href")
    async with page.expect_request(
        lambda r: r.method == "GET" and r.url.endswith(f"/v1/jobs/{job_id}")
    ):
        await download_and_check(page, download_link, tmp_path / "renewed")
    await expect(download_link).not_to_have_attribute("href", old_url or "")
    new_url = await download_link.get_attribute("href")
    assert new_url is not None
    assert STREAM_URL.match(new_url)
    await expect(audio).to_have_attribute("src", new_url)

    # A link the server refuses (as an expired one is): the player fetches a new one itself.
    refused = "/v1/downloads/not-a-valid-token"
    async with page.expect_request(
        lambda r: r.method == "GET" and r.url.endswith(f"/v1/jobs/{job_id}")
    ):
        await audio.evaluate("(a, url) => { a.src = url; }", refused)
    await expect(audio).not_to_have_attribute("src", refused)
    await expect(audio).to_have_attribute("src", STREAM_URL)
    assert await audio.evaluate(
        """a => new Promise((resolve, reject) => {
             if (a.readyState >= 1) return resolve(true);
             a.addEventListener("loadedmetadata", () => resolve(true), {once: true});
             a.addEventListener("error", () => reject(new Error(String(a.error?.message))));
           })"""
    )
    await expect(card.locator(".player-note")).to_be_hidden()

    # The notifications panel lists it with the emailed link; opening it clears the badge.
    await page.get_by_role("button", name=re.compile(r"^Notifications")).click()
    panel = page.get_by_role("region", name="Notifications")
    await expect(panel).to_be_visible()
    await expect(panel.locator(".notification")).to_have_count(1)
    await expect(page.locator("#notification-badge")).to_be_hidden()
    link = await panel.get_by_role("link", name="Download link").get_attribute("href")
    assert link is not None
    await screenshot(page, "notifications")
    await page.keyboard.press("Escape")
    await expect(panel).to_be_hidden()

    # The emailed link downloads without logging in.
    async with httpx.AsyncClient() as client:
        emailed = await client.get(link)
    assert emailed.status_code == 200
    assert emailed.headers["content-type"] == "audio/mpeg"

    # Delete it: two presses (the first asks to confirm).
    delete = card.get_by_role("button", name=re.compile(r"^Delete"))
    await delete.click()
    await expect(delete).to_have_text("Delete for good?")
    await delete.click()
    await expect(card).to_have_count(0)
    await expect(page.locator("#history-empty")).to_be_visible()


async def test_a_video_without_audio_shows_why_it_failed(
    stack: Stack, page: Page, shared_media: Path
) -> None:
    await register(page, stack.gateway_url)
    await upload(page, shared_media / "cityCC0.mpg")
    card = job_card(page, "cityCC0.mpg")
    await wait_status(card, "failed")
    await expect(card.locator(".status-pill")).to_have_text("Failed")
    await expect(card.locator(".job-error")).to_have_text("The file has no audio track.")
    await expect(card.locator("audio")).to_have_count(0)
    await expect(card.get_by_role("link", name=re.compile(r"^Download"))).to_have_count(0)
    await expect(page.locator("#notification-badge")).to_have_text("1", timeout=20_000)
    await screenshot(page, "failed")


async def test_upload_progress_then_cancel_a_running_conversion(
    stack: Stack, page: Page, media: MediaFactory
) -> None:
    await register(page, stack.gateway_url)
    long_clip = media.h264_aac(900, size="64x48")
    # Slow the network down so that the upload is slow enough to watch.
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 5,
            "downloadThroughput": -1,
            "uploadThroughput": long_clip.stat().st_size / 6,
        },
    )
    await upload(page, long_clip)
    item = page.locator("li.upload", has_text=long_clip.name)
    status = item.locator(".upload-status")
    await expect(status).to_have_text(re.compile(r"^\d.* of .*MB · .*/s$"))
    await expect(item).to_have_attribute("data-loaded", re.compile(r"^[1-9]\d{5,}$"))
    await screenshot(page, "uploading")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    card = job_card(page, long_clip.name)
    await wait_status(card, "processing")
    await expect(card.locator(".status-pill")).to_have_text(re.compile(r"^Converting [1-9]\d?%$"))
    await expect(item).to_have_count(0)
    await screenshot(page, "converting")

    await card.get_by_role("button", name=re.compile(r"^Cancel the conversion")).click()
    await wait_status(card, "cancelled", timeout=20_000)
    await expect(card.locator(".status-pill")).to_have_text("Cancelled")


async def test_reload_keeps_the_session_and_logout_ends_it(
    stack: Stack, page: Page, media: MediaFactory
) -> None:
    email = await register(page, stack.gateway_url)
    video = media.h264_aac(5)
    await upload(page, video)
    await wait_status(job_card(page, video.name), "completed")

    await page.reload()
    await expect(page.locator("#user-email")).to_have_text(email)
    await wait_status(job_card(page, video.name), "completed", timeout=10_000)
    await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")

    # An access token the server refuses: the page refreshes it once and carries on.
    before = await stored_session(page)
    assert before is not None
    await page.evaluate(
        """key => {
             const s = JSON.parse(localStorage.getItem(key));
             s.access_token = "not-a-token";
             s.access_expires_at = Date.now() + 3600_000;
             localStorage.setItem(key, JSON.stringify(s));
           }""",
        SESSION_KEY,
    )
    await page.reload()
    await wait_status(job_card(page, video.name), "completed", timeout=10_000)
    await expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    await expect(page.locator("#history-error")).to_be_empty()
    after = await stored_session(page)
    assert after is not None
    assert after["refresh_token"] != before["refresh_token"]  # rotated exactly once, still valid
    await page.reload()
    await expect(page.locator("#user-email")).to_have_text(email)

    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert await stored_session(page) is None
    await page.reload()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.locator("#app-view")).to_be_hidden()


async def test_a_browser_that_logged_in_before_gets_past_strangers_lockout(
    stack: Stack, page: Page, browser: Browser
) -> None:
    # Anyone could lock an account by failing on purpose: its owner too, on every browser.
    email = await register(page, stack.gateway_url)
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    async with httpx.AsyncClient(base_url=stack.gateway_url) as client:
        # From addresses of their own (the gateway trusts the loopback's X-Forwarded-For).
        statuses = [
            (await client.post(
                "/v1/auth/login", data={"username": email, "password": "not the password"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )).status_code
            for n in range(8)
        ]  # fmt: skip
    assert statuses[-1] == 429, statuses
    elsewhere = await browser.new_context(viewport=DESKTOP, locale="en-GB")
    try:
        stranger = await elsewhere.new_page()
        await open_page(stranger, stack.gateway_url)
        await log_in(stranger, email)
        await expect(stranger.locator("#auth-error")).to_have_text(
            "Too many failed logins. Try again in a few minutes."
        )
    finally:
        await elsewhere.close()
    await log_in(page, email)
    await expect(page.locator("#user-email")).to_have_text(email)


async def test_options_are_sent_with_the_upload(
    stack: Stack, page: Page, media: MediaFactory
) -> None:
    await register(page, stack.gateway_url)
    options = page.locator("#options")
    await options.locator("summary").click()
    await page.get_by_label("Quality").select_option(label="192 kbit/s constant")
    await page.get_by_label("Title").fill("Test tone")
    await page.get_by_label("Even out the loudness (normalize)").check()
    await expect(page.locator("#options-summary")).to_have_text(
        "MP3, 192 kbit/s, normalized, tagged"
    )
    await screenshot(page, "options", full_page=True)
    # Lossless formats have no quality to choose.
    await page.get_by_label("Format").select_option("flac")
    await expect(page.get_by_label("Quality")).to_be_disabled()
    await page.get_by_label("Format").select_option("mp3")
    await page.get_by_label("Quality").select_option(label="192 kbit/s constant")

    video = media.h264_aac(3)
    # The options travel in the upload's tus metadata; the page then reads the job they made.
    async with page.expect_response(
        lambda r: re.search(r"/v1/jobs/[0-9a-f]+$", r.url) is not None and r.request.method == "GET"
    ) as info:
        await upload(page, video)
    response = await info.value
    assert response.status == 200, await response.text()
    sent = (await response.json())["options"]
    # The gateway echoes the fields it was sent (as text, or normalized once options land).
    assert str(sent["bitrate"]) == "192"
    assert sent["title"] == "Test tone"
    assert str(sent["normalize"]).lower() == "true"
    assert "quality" not in sent or sent["quality"] is None
    assert sent.get("format", "mp3") == "mp3"
    await expect(job_card(page, video.name)).to_be_visible()


async def test_phone_width_and_drag_and_drop(
    stack: Stack, browser: Browser, media: MediaFactory
) -> None:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = await context.new_page()
        await open_page(page, stack.gateway_url)
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(page, "phone-login")
        await register(page, stack.gateway_url)

        video = media.h264_aac(4)
        await page.evaluate(
            """({name, data}) => {
                 const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                 const transfer = new DataTransfer();
                 transfer.items.add(new File([bytes], name, {type: "video/mp4"}));
                 const zone = document.querySelector("#dropzone");
                 for (const type of ["dragenter", "dragover", "drop"]) {
                   zone.dispatchEvent(new DragEvent(type,
                     {bubbles: true, cancelable: true, dataTransfer: transfer}));
                 }
               }""",
            {"name": video.name, "data": base64.b64encode(video.read_bytes()).decode()},
        )
        card = job_card(page, video.name)
        await wait_status(card, "completed")
        await expect(card.locator("audio")).to_have_attribute("src", STREAM_URL)
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(page, "phone", full_page=True)
    finally:
        await context.close()


async def test_live_updates_come_back_after_the_gateway_restarts(
    stack: Stack, page: Page, media: MediaFactory
) -> None:
    await register(page, stack.gateway_url)
    live = page.locator("#live-state")
    await expect(live).to_have_attribute("data-state", "live")

    await asyncio.to_thread(stack.stop, "gateway")
    await expect(live).to_have_attribute("data-state", "reconnecting")
    await asyncio.to_thread(stack.start, "gateway")
    await expect(live).to_have_attribute("data-state", "live", timeout=30_000)

    # The new connection carries events: a conversion started now finishes without a reload.
    video = media.h264_aac(2)
    await upload(page, video)
    await wait_status(job_card(page, video.name), "completed")
