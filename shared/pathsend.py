"""Zero-copy file bodies under uvicorn: the ASGI `http.response.pathsend` extension.

uvicorn sends every response body through Python: a file is read into memory and written into
the transport, which for a large download costs more than the network itself. `PathsendProtocol`
is uvicorn's httptools protocol plus the `http.response.pathsend` extension: an app that sends
`{"type": "http.response.pathsend", "path": ...}` after its `http.response.start` (with a
`Content-Length`) has the kernel's sendfile(2) move the file from the page cache to the socket.

uvloop has no `loop.sendfile` and lets nothing else watch a transport's socket, so the copy runs
in a small dedicated thread pool that waits for the socket with poll(2) on its own. When every
thread is busy, or the response has no `Content-Length`, the file is streamed as ordinary body
messages instead. TLS connections never get the extension (sendfile would bypass the cipher).

This module, `shared/bulkbody.py` and `shared/server_protocol.py` are the only ones
allowed to touch uvicorn's private protocol classes; `pyproject.toml` pins uvicorn to the minor
version their tests (`tests/test_bulkbody.py`, `tests/test_pathsend.py`,
`tests/security/test_exposure.py`) pass on. Raise the pin only with them green.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

PATHSEND = "http.response.pathsend"

SENDFILE_THREADS = 16
# One sendfile(2) call moves at most this much, so a stop request is seen between calls.
SENDFILE_BLOCK = 8 * 1024 * 1024
STREAM_BLOCK = 1024 * 1024
POLL_MS = 500
# A client that takes nothing for this long is dropped (the connection is closed).
STALL_TIMEOUT = 60.0

_pool = ThreadPoolExecutor(SENDFILE_THREADS, thread_name_prefix="sendfile")
_slots = threading.BoundedSemaphore(SENDFILE_THREADS)

Send = Callable[[Any], Awaitable[None]]


class PathsendProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) offering `http.response.pathsend`."""

    def on_headers_complete(self) -> None:
        scope: Any = self.scope
        if self.scheme == "http":
            scope["extensions"] = {**scope.get("extensions", {}), PATHSEND: {}}
        super().on_headers_complete()
        cycle = self.cycle
        # An upgrade (WebSocket) creates no cycle for this request.
        if cycle is not None and cycle.scope is scope:
            cycle.send = _with_pathsend(cycle, cycle.send)  # type: ignore[method-assign,assignment]


def _with_pathsend(cycle: RequestResponseCycle, send: Send) -> Send:
    async def send_with_pathsend(message: Any) -> None:
        if message["type"] != PATHSEND:
            await send(message)
            return
        if cycle.disconnected:
            return
        path = str(message["path"])
        length = cycle.expected_content_length
        if cycle.scope["method"] == "HEAD" or (length == 0 and not cycle.chunked_encoding):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        sock = cycle.transport.get_extra_info("socket")
        if cycle.chunked_encoding or sock is None or not _slots.acquire(blocking=False):
            await _stream(path, send)
            return
        sent = await _sendfile(cycle, sock.fileno(), path, length)
        if sent < length:
            # The client went away, stalled, or the file shrank: the response cannot be
            # completed, and the connection must not carry another one.
            cycle.transport.close()
            cycle.disconnected = True
            return
        cycle.expected_content_length = 0
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return send_with_pathsend


async def _sendfile(cycle: RequestResponseCycle, sock_fd: int, path: str, length: int) -> int:
    """Bytes of `path` sent on `sock_fd` (the cycle's socket), from offset 0 up to `length`.

    Called holding a slot; the slot is free again once no thread works for this response."""
    try:
        owned_fd = await _ready_socket(cycle.transport, sock_fd)
    except BaseException:
        _slots.release()
        raise
    if owned_fd is None:
        _slots.release()
        return 0
    stop = threading.Event()
    try:
        job = _pool.submit(_send_blocking, owned_fd, path, length, stop)
    except RuntimeError:  # the pool is shut down (the interpreter is exiting)
        os.close(owned_fd)
        _slots.release()
        return 0
    # On the job itself, not on the task awaiting it: a cancelled response's thread still runs
    # until it sees `stop`, and its slot is not free before that.
    job.add_done_callback(functools.partial(_job_done, owned_fd))
    try:
        return await asyncio.shield(asyncio.wrap_future(job))
    except OSError:
        return 0
    except asyncio.CancelledError:
        stop.set()
        job.cancel()  # succeeds only while it waits in the pool's queue
        raise


def _job_done(owned_fd: int, job: Future[int]) -> None:
    if job.cancelled():
        os.close(owned_fd)  # the job never ran, so _send_blocking never closed it
    _slots.release()


async def _ready_socket(transport: asyncio.Transport, sock_fd: int) -> int | None:
    """A descriptor of the socket for the thread alone, once the headers are on the wire;
    None if the connection closes (or stalls) first."""
    deadline = time.monotonic() + STALL_TIMEOUT
    # The status line and headers (and any rest of a previous response on this connection)
    # must be on the wire before the file's bytes.
    while transport.get_write_buffer_size():
        if transport.is_closing() or time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.001)
    if transport.is_closing():
        return None
    # The thread writes to its own descriptor: were the transport closed meanwhile, its number
    # could be reused by the next connection, which must never receive this file's bytes.
    try:
        return os.dup(sock_fd)
    except OSError:  # out of descriptors
        return None


def _send_blocking(sock_fd: int, path: str, length: int, stop: threading.Event) -> int:
    """Sends the file on `sock_fd`, which it owns and closes."""
    try:
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        with _corked(sock_fd):
            return _sendfile_loop(sock_fd, poller, path, length, stop)
    finally:
        os.close(sock_fd)


@contextlib.contextmanager
def _corked(sock_fd: int) -> Iterator[None]:
    """TCP_CORK for the length of the file: the kernel then sends only full segments, not one
    per run of pages sendfile(2) hands it (a 1 GiB download on loopback: 0.50 s -> 0.37 s, what
    nginx gets from `tcp_nopush`). Uncorking at the end pushes out the last partial segment."""
    cork = getattr(socket, "TCP_CORK", None)  # Linux's; elsewhere the file goes out uncorked
    if cork is None:
        yield
        return
    # A view of the thread's own descriptor, detached (not closed) at the end: its owner closes it.
    sock = socket.socket(fileno=sock_fd)
    try:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
        except OSError:  # not TCP (a Unix socket): nothing to cork
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, cork, 0)
    finally:
        sock.detach()


def _sendfile_loop(
    sock_fd: int, poller: select.poll, path: str, length: int, stop: threading.Event
) -> int:
    sent = 0
    last_progress = time.monotonic()
    with open(path, "rb") as source:
        while sent < length and not stop.is_set():
            try:
                count = os.sendfile(
                    sock_fd, source.fileno(), sent, min(SENDFILE_BLOCK, length - sent)
                )
            except BlockingIOError:
                poller.poll(POLL_MS)
                if time.monotonic() - last_progress > STALL_TIMEOUT:
                    break
                continue
            if count == 0:
                break  # the file is shorter than announced
            sent += count
            last_progress = time.monotonic()
    return sent


async def _stream(path: str, send: Send) -> None:
    source = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(source.read, STREAM_BLOCK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await asyncio.to_thread(source.close)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
