"""shared.blobstore._aio.ThreadFile: a descriptor is never closed under a call still running."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

from shared.blobstore._aio import ThreadFile, pwrite_all


def _held(
    release: threading.Event, started: threading.Semaphore, seen: list[int]
) -> Callable[[int], None]:
    def call(fd: int) -> None:
        started.release()
        release.wait(10)
        # Still our file: fstat fails with EBADF if the descriptor was closed meanwhile.
        seen.append(os.fstat(fd).st_ino)

    return call


async def test_close_waits_for_every_call_still_running(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    f = ThreadFile(fd)
    first, second = threading.Event(), threading.Event()
    started = threading.Semaphore(0)
    seen: list[int] = []
    calls = [
        asyncio.ensure_future(f.call(_held(first, started, seen))),
        asyncio.ensure_future(f.call(_held(second, started, seen))),
    ]
    for _ in calls:
        assert await asyncio.to_thread(started.acquire, True, 10)
    for call in calls:  # their callers give up (a failed upload), the threads run on
        call.cancel()
    closing = asyncio.ensure_future(f.close())
    second.set()
    await asyncio.sleep(0.2)
    assert not closing.done(), "closed while the first call was still running"
    first.set()
    await asyncio.wait_for(closing, 10)
    assert seen == [path.stat().st_ino] * 2
    assert f.closed


def test_pwrite_all_writes_at_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        pwrite_all(fd, b"world", 6)
        pwrite_all(fd, b"hello ", 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"hello world"
