"""The reference tus client (tus-js-client under Node) against the real stack: an upload whose
connection the test drops mid-way resumes from the server's offset, and the job that its last
byte makes converts into a correct MP3."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.test_pipeline import auth, wait_final
from tests.e2e.test_tus import TUS
from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack
from tests.support.tus import CuttingProxy, run_node_upload

MIB = 1024 * 1024
CUT = 2 * MIB


@pytest.fixture(scope="module")
def video(media: MediaFactory) -> Path:
    clip = media.h264_aac(seconds=12, size="1280x720")
    assert clip.stat().st_size > 3 * CUT, clip.stat().st_size
    return clip


async def server_offset(client: httpx.AsyncClient, user: dict[str, str], url: str) -> int:
    """The offset once the server has settled what the dropped request brought."""
    deadline = time.monotonic() + 20
    last = -1
    while True:
        response = await client.head(url, headers={**TUS, **auth(user)})
        assert response.status_code == 200, response.status_code
        offset = int(response.headers["Upload-Offset"])
        if offset == last and offset > 0:
            return offset
        assert time.monotonic() < deadline, "the server kept nothing of the dropped request"
        last = offset
        await asyncio.sleep(0.5)


def patches(lines: list[dict[str, object]]) -> list[int]:
    sent = [line for line in lines if line.get("method") == "PATCH" and "status" not in line]
    return [int(str(line["offset"])) for line in sent]


async def finished_mp3(
    client: httpx.AsyncClient, user: dict[str, str], job_id: str, out: Path
) -> float:
    job = await wait_final(client, user, job_id, timeout=120)
    assert job["status"] == "completed", job
    response = await client.get(f"/v1/jobs/{job_id}/download", headers=auth(user))
    assert response.status_code == 200
    out.write_bytes(response.content)
    return decode(out).duration


async def test_a_client_run_again_resumes_where_the_server_stands(
    client: httpx.AsyncClient, user: dict[str, str], stack: Stack, video: Path, tmp_path: Path
) -> None:
    size = video.stat().st_size
    storage = tmp_path / "tus-urls.json"
    token = user["access_token"]
    proxy = CuttingProxy(stack.ports["gateway"], cut_after=CUT)
    async with proxy.running():
        endpoint = f"http://127.0.0.1:{proxy.port}/v1/uploads"
        code, first = await run_node_upload(endpoint, video, token, storage)
        assert code == 1, first
        assert "error" in first[-1]
        (remembered,) = json.loads(storage.read_text()).values()
        upload_url = urlsplit(remembered["uploadUrl"]).path

        offset = await server_offset(client, user, upload_url)
        assert 0 < offset < size

        code, second = await run_node_upload(endpoint, video, token, storage)
    assert code == 0, second
    assert any("resuming" in line for line in second), second
    assert patches(second) == [offset]
    done = second[-1]
    assert done["done"] is True
    assert done["location"] == f"/v1/jobs/{done['jobId']}"
    # The second run sent what was missing, not the file again.
    assert sum(proxy.sent[1:]) < size - offset + 64 * 1024
    assert abs(await finished_mp3(client, user, str(done["jobId"]), tmp_path / "a.mp3") - 12) < 0.2


async def test_the_client_retries_from_the_servers_offset(
    client: httpx.AsyncClient, user: dict[str, str], stack: Stack, video: Path, tmp_path: Path
) -> None:
    proxy = CuttingProxy(stack.ports["gateway"], cut_after=CUT)
    async with proxy.running():
        endpoint = f"http://127.0.0.1:{proxy.port}/v1/uploads"
        code, lines = await run_node_upload(
            endpoint, video, user["access_token"], tmp_path / "urls.json", retries=5
        )
    assert code == 0, lines
    offsets = patches(lines)
    assert offsets[0] == 0
    assert len(offsets) >= 2, lines
    # After the drop the client asked (HEAD) and went on from a point past the start.
    assert any(line.get("method") == "HEAD" for line in lines)
    assert offsets[-1] > 0
    done = lines[-1]
    assert abs(await finished_mp3(client, user, str(done["jobId"]), tmp_path / "b.mp3") - 12) < 0.2
