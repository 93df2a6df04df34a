"""Blocking file calls off the event loop, and steps that must not stop halfway when cancelled."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

# Tasks left running after their awaiting caller was cancelled twice; kept referenced so the
# garbage collector cannot drop them before they finish.
_unattended: set[asyncio.Future[Any]] = set()


async def run_to_completion(aw: Awaitable[T]) -> T:
    """Await `aw` so that cancelling the caller cannot interrupt it halfway.

    For commits and clean-ups: a cancellation arriving meanwhile is raised only after `aw` has
    finished, so the caller never leaves a half-done state behind.
    """
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _unattended.add(task)
            task.add_done_callback(_unattended.discard)
            task.add_done_callback(_log_failure)
            await asyncio.wait([task])
        raise


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("blob store step failed after its caller was cancelled: %r", exc)


async def off_loop(fn: Callable[[], T], *, undo: Callable[[T], None] | None = None) -> T:
    """Run a blocking call in a worker thread.

    A thread cannot be interrupted: if the caller is cancelled, the call still finishes, and
    `undo` then releases what it produced (closes a descriptor, removes a temp file).
    """
    fut = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if undo is not None:
            fut.add_done_callback(lambda f: _undo_result(f, undo))
        raise


def _undo_result(fut: asyncio.Future[T], undo: Callable[[T], None]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        return
    try:
        undo(fut.result())
    except OSError as exc:
        log.warning("could not undo an abandoned file operation: %r", exc)


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
        await run_to_completion(f.close())
