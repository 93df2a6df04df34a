"""`video2mp3 convert` uploads over tus: a run killed mid-upload leaves the upload on the
server, and running the same command again resumes it from the server's offset."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from tests.e2e.test_cli import run_cli
from tests.e2e.test_tus_resume import server_offset
from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack
from tests.support.tus import CuttingProxy

CUT = 2 * 1024 * 1024


async def test_convert_run_again_resumes_the_unfinished_upload(
    stack: Stack,
    client: httpx.AsyncClient,
    user: dict[str, str],
    media: MediaFactory,
    tmp_path: Path,
) -> None:
    video = media.h264_aac(seconds=12, size="1280x720")
    size = video.stat().st_size
    out = tmp_path / "out"
    proxy = CuttingProxy(stack.ports["gateway"], cut_after=CUT, stall=True)
    async with proxy.running():
        server = f"http://127.0.0.1:{proxy.port}"
        env = {
            **os.environ,
            "VIDEO2MP3_EMAIL": user["email"],
            "VIDEO2MP3_PASSWORD": "correct horse battery staple",
            "XDG_CONFIG_HOME": str(tmp_path),
        }
        first = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "convert", str(video), "-o", str(out),
            "--server", server,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.wait_for(proxy.cut.wait(), 60)
        finally:
            first.kill()  # as a crash or a closed laptop would: no goodbye to the server
            await first.wait()

        remembered = json.loads((tmp_path / "video2mp3" / "uploads.json").read_text())
        (url,) = remembered.values()
        offset = await server_offset(client, user, url)
        assert 0 < offset < size
        before = sum(proxy.sent)

        code, _, stderr = await run_cli(
            stack, user, str(video), "-o", str(out), home=tmp_path, server=server
        )
    assert code == 0, stderr
    # Only what the server lacked went again (plus requests' headers and the MP3's download).
    assert sum(proxy.sent) - before < size - offset + 64 * 1024, (proxy.sent, offset)
    assert abs(decode(out / f"{video.stem}.mp3").duration - 12) < 0.2
    assert json.loads((tmp_path / "video2mp3" / "uploads.json").read_text()) == {}
