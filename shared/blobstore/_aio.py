"""Blocking file calls off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from shared.aio import shielded

T = TypeVar("T")


async def off_loop(fn: Callable[[], T], *, undo: Callable[[T], None] | None = None) -> T:
    """Run a blocking call in a worker thread.

    A thread cannot be interrupted: if the caller is cancelled, the call still finishes, and
    `undo` then releases what it produced (closes a descriptor, removes a temp file).
    """
    fut = asyncio.get_running_loop().run_in_executor(None, fn)
    return await shielded(fut, "an abandoned file operation", expected=(OSError,), undo=undo)


class ThreadFile:
    """A raw descriptor whose blocking calls run in worker threads.

    `close` first waits for every call still running in a thread (possible after the awaiting
    task was cancelled), so the descriptor number is never closed, and reused, under one.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # Calls still running in a thread; several may run at once (writes at their own offsets).
        self._running: set[asyncio.Future[Any]] = set()
        self.closed = False

    @classmethod
    async def open(cls, path: Path, flags: int) -> ThreadFile:
        fd = await off_loop(lambda: os.open(path, flags | os.O_CLOEXEC), undo=os.close)
        return cls(fd)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(fd, *args)` in a worker thread."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn, self.fd, *args)
        self._running.add(fut)
        fut.add_done_callback(self._running.discard)
        return await asyncio.shield(fut)

    async def close(self) -> None:
        if self.closed:
            return
        if self._running:
            await asyncio.wait(list(self._running))
        self.closed = True
        await asyncio.to_thread(os.close, self.fd)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


async def pread_blocks(f: ThreadFile, start: int, stop: int, block: int) -> AsyncIterator[bytes]:
    """Blocks of at most `block` bytes of [start, stop) of an open file."""
    pos = start
    while pos < stop:
        data: bytes = await f.call(os.pread, min(block, stop - pos), pos)
        if not data:
            # Shorter than expected; blobs are never modified in place, so only a foreign hand
            # could truncate the file. End here rather than spin.
            break
        pos += len(data)
        yield data


async def iter_file(path: Path, block: int) -> AsyncIterator[bytes]:
    """A whole local file in blocks of at most `block` bytes.

    Raises FileNotFoundError on the first iteration when the file does not exist.
    """
    f = await ThreadFile.open(path, os.O_RDONLY)
    try:
        size = (await f.call(os.fstat)).st_size
        async for data in pread_blocks(f, 0, size, block):
            yield data
    finally:
        await shielded(f.close(), "closing a file", wait=True)
