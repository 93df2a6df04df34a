"""Import from a URL against the real services: the file is fetched by a worker, bounded while it
streams, sniffed, converted; failures are job errors. Sources are served on 127.0.0.1 only, the
one address OUTBOUND_ALLOW_NETS allows; every other loopback form must be refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.asyncio.client import connect

from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_live import events_until_final, receive, ws_url
from tests.e2e.test_pipeline import auth, wait_final
from tests.support.asgi import serving
from tests.support.media import MediaFactory
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher

LIMIT = 1024 * 1024


def source_app(clip: bytes) -> Starlette:
    async def clip_file(request: Request) -> Response:
        return Response(clip, media_type="audio/flac")

    async def huge(request: Request) -> Response:
        # Chunked, no Content-Length: only counting the streamed bytes can stop it.
        async def body() -> AsyncIterator[bytes]:
            yield clip[:4096]
            for _ in range(LIMIT // 65536 + 4):
                yield b"\0" * 65536

        return StreamingResponse(body(), media_type="video/mp4")

    async def hop(request: Request) -> Response:
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def text(request: Request) -> Response:
        return PlainTextResponse("<html>not a video</html>" * 400)

    return Starlette(
        routes=[
            Route("/media/holiday.flac", clip_file),
            Route("/huge.mp4", huge),
            Route("/hop", hop),
            Route("/page.html", text),
        ]
    )


async def post_import(client: httpx.AsyncClient, user: dict[str, str], body: Any) -> httpx.Response:
    return await client.post("/v1/jobs", headers=auth(user), json=body)


async def test_url_imports(
    private_stack: StackFactory, media: MediaFactory, tmp_path: Path
) -> None:
    clip = media.tone(2, 0.5, "import.flac").read_bytes()
    port = free_port()
    config = uvicorn.Config(source_app(clip), host="127.0.0.1", port=port, log_level="warning")
    base = f"http://127.0.0.1:{port}"
    async with (
        serving(config),
        SmtpCatcher() as smtp,
        private_stack(
            smtp.url,
            OUTBOUND_ALLOW_NETS="127.0.0.1/32",
            MAX_UPLOAD_BYTES=str(LIMIT),
            USER_JOBS_PER_DAY="9",
            NETWORK_TIMEOUT="15",
        ) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client,
    ):
        user = await register_and_login(client)
        async with connect(ws_url(stack.gateway_url, user["access_token"])) as ws:
            assert (await receive(ws))["type"] == "snapshot"
            ok = await post_import(client, user, {"source_url": f"{base}/media/holiday.flac"})
            assert ok.status_code == 202, ok.text
            events = await events_until_final(ws, ok.json()["id"])
        # The fetch is shown live, before the conversion starts.
        fetch = [e for e in events if e.get("stage") == "fetch"]
        assert fetch, events
        assert fetch[-1]["progress"] == 100
        assert events.index(fetch[-1]) < [e["type"] for e in events].index("job.started")
        assert ok.headers["location"] == f"/v1/jobs/{ok.json()['id']}"
        assert ok.json()["filename"] == "holiday.flac"
        redirected = await post_import(
            client,
            user,
            {"source_url": f"{base}/hop?to=/media/holiday.flac", "format": "opus", "bitrate": 96},
        )
        assert redirected.status_code == 202, redirected.text
        done = await wait_final(client, user, ok.json()["id"], timeout=120)
        assert done["status"] == "completed", done
        assert done["source"]["size"] == len(clip)
        download = await client.get(done["output"]["download_url"], headers=auth(user))
        assert download.status_code == 200
        assert download.content[:3] == b"ID3" or download.content[:2] == b"\xff\xfb"
        done = await wait_final(client, user, redirected.json()["id"], timeout=120)
        assert done["status"] == "completed", done
        assert done["options"]["format"] == "opus"
        # The form field `source_url` in place of `file` does the same.
        form = await client.post(
            "/v1/jobs",
            headers=auth(user),
            files={"source_url": (None, f"{base}/media/holiday.flac"), "format": (None, "wav")},
        )
        assert form.status_code == 202, form.text
        done = await wait_final(client, user, form.json()["id"], timeout=120)
        assert done["status"] == "completed", done
        assert done["options"]["format"] == "wav"
        neither = await client.post("/v1/jobs", headers=auth(user), files={"format": (None, "wav")})
        assert neither.status_code == 422

        failures = {
            f"{base}/missing.mp4": ("url_fetch_failed", "404"),
            f"{base}/page.html": ("not_media", ""),
            f"{base}/huge.mp4": ("file_too_large", ""),
            f"http://127.0.0.1:{free_port()}/closed.mp4": ("url_fetch_failed", ""),
            # Only 127.0.0.1 is allowed: a hop to another loopback address is refused.
            f"{base}/hop?to=http://127.0.0.2:{port}/media/holiday.flac": ("url_forbidden", ""),
        }
        jobs = {}
        for url in failures:
            response = await post_import(client, user, {"source_url": url})
            assert response.status_code == 202, (url, response.text)
            jobs[url] = response.json()["id"]
        for url, (code, detail) in failures.items():
            job = await wait_final(client, user, jobs[url], timeout=120)
            assert job["status"] == "failed", (url, job)
            assert job["error"]["code"] == code, (url, job["error"])
            assert detail in job["error"]["detail"], (url, job["error"])
            assert job["output"] is None

        # Quotas apply as to uploads: USER_JOBS_PER_DAY=9, and 8 were started.
        last = await post_import(client, user, {"source_url": f"{base}/media/holiday.flac"})
        assert last.status_code == 202, last.text
        over = await post_import(client, user, {"source_url": f"{base}/media/holiday.flac"})
        assert over.status_code == 429, over.text
        assert over.json()["code"] == "daily_limit"

        # Bad input, and who may ask.
        other = await register_and_login(client)
        mine = await client.get(f"/v1/jobs/{ok.json()['id']}", headers=auth(other))
        assert mine.status_code == 404
        anonymous = await client.post("/v1/jobs", json={"source_url": f"{base}/x.mp4"})
        assert anonymous.status_code == 401
        for body in [
            {},
            {"source_url": 5},
            {"source_url": ""},
            {"source_url": f"{base}/{'x' * 3000}"},
            {"source_url": f"{base}/a.mp4", "bitrate": 7},
            {"source_url": f"{base}/a.mp4", "unknown_option": "1"},
            ["not", "an", "object"],
        ]:
            response = await post_import(client, user, body)
            assert response.status_code == 422, (body, response.text)
        garbled = await client.post(
            "/v1/jobs",
            headers={**auth(user), "content-type": "application/json"},
            content=b"{not json",
        )
        assert garbled.status_code == 422

        # With OUTBOUND_ALLOW_NETS unset, every loopback form is refused before a job exists.
        stack.env.pop("OUTBOUND_ALLOW_NETS")
        await asyncio.to_thread(stack.start, "guarded", "gateway")
        async with httpx.AsyncClient(base_url=stack.url("guarded"), timeout=30) as guarded:
            before = (await guarded.get("/v1/jobs", headers=auth(user))).json()["items"]
            for host in ["127.0.0.1", "localhost", "2130706433", "[::1]", "[::ffff:127.0.0.1]"]:
                url = f"http://{host}:{port}/media/holiday.flac"
                response = await post_import(guarded, user, {"source_url": url})
                assert response.status_code == 422, (url, response.text)
                assert response.json()["code"] == "url_forbidden"
            for url in ["file:///etc/passwd", "ftp://127.0.0.1/a.mp4", "gopher://x/"]:
                response = await post_import(guarded, user, {"source_url": url})
                assert response.json()["code"] == "url_forbidden", url
            after = (await guarded.get("/v1/jobs", headers=auth(user))).json()["items"]
            assert len(after) == len(before)
