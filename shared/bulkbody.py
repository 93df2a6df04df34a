"""Large request bodies read off the event loop, in 1 MiB blocks, by a thread.

uvicorn hands a request body to the app in the pieces the event loop happened to read (64 KiB
or less on loopback) and pauses and resumes the transport around each one: a 1 GiB upload is
some 16,000 rounds of Python before the app has done any work of its own, which caps any
uvicorn app near half of what nginx takes in on this machine. For a request announcing a
`Content-Length` of at least BULK_MIN, the app's first `receive()` pauses the transport and a
thread reads exactly the rest of the body from the socket with readv(2), at most AHEAD blocks
ahead of the app. Once the body is in, the connection goes back to uvicorn with a fresh parser,
which is then exactly at the start of the next request on the connection.

Without a free thread, over TLS, with a chunked body or a small one, nothing changes.

This module, `shared/pathsend.py` and `shared/server_protocol.py` are the only ones
allowed to touch uvicorn's private protocol classes; `pyproject.toml` pins uvicorn to the minor
version their tests (`tests/test_bulkbody.py`, `tests/test_pathsend.py`,
`tests/security/test_exposure.py`) pass on. Raise the pin only with them green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

BULK_MIN = 1024 * 1024
BLOCK = 1024 * 1024
# A block goes to the app once the socket runs dry with at least this much in it: handing over
# every few KiB a fast client's socket holds costs a loop wake-up each.
HANDOFF_MIN = 256 * 1024
# Blocks read but not yet taken by the app: the memory a bulk upload holds is AHEAD * BLOCK.
AHEAD = 4
READER_THREADS = 16
POLL_S = 0.5
# A client that sends nothing for this long is dropped, as a stalled download is.
STALL_TIMEOUT = 60.0

_pool = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="bulkbody")
_slots = threading.BoundedSemaphore(READER_THREADS)

Receive = Callable[[], Awaitable[Any]]


class BulkBody:
    """The rest of one request's body, being read by a thread on a dup of the socket."""

    def __init__(
        self, protocol: BulkBodyProtocol, cycle: RequestResponseCycle, fd: int, remaining: int
    ) -> None:
        self.protocol = protocol
        self.cycle = cycle
        self.loop = asyncio.get_running_loop()
        self.fd = fd
        self.remaining = remaining
        self.chunks: deque[bytes] = deque()
        # Bytes of the body the thread has still to hand over.
        self.more = True
        # Set on the loop once the thread is gone; `complete` when it read the whole body.
        self.done = False
        self.complete = False
        self.response_done = False
        self.stop = threading.Event()
        self.credits = threading.Semaphore(AHEAD)
        self.buffer = memoryview(b"")

    def start(self) -> None:
        future = self.loop.run_in_executor(_pool, self._read_blocking)
        future.add_done_callback(self._finished)

    def take(self) -> bytes:
        self.credits.release()
        return self.chunks.popleft()

    def answered(self) -> None:
        """The response is complete: what is left of the body is read and dropped."""
        self.response_done = True
        while self.chunks:
            self.take()

    # Thread side.

    def _read_blocking(self) -> bool:
        """True when the whole body was read (and handed over, or discarded once answered)."""
        try:
            # One buffer for the whole body: a fresh 1 MiB each time costs page faults.
            self.buffer = memoryview(bytearray(BLOCK))
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            while self.remaining > 0:
                if not self._wait_credit():
                    return False
                chunk = self._read_block(poller, min(BLOCK, self.remaining))
                if chunk is None:
                    return False
                self.remaining -= len(chunk)
                self.loop.call_soon_threadsafe(self._deliver, chunk, self.remaining == 0)
            return True
        except OSError:
            return False
        finally:
            os.close(self.fd)
            _slots.release()

    def _wait_credit(self) -> bool:
        while not self.credits.acquire(timeout=POLL_S):
            if self.stop.is_set():
                return False
        return not self.stop.is_set()

    def _read_block(self, poller: select.poll, want: int) -> bytes | None:
        """Up to `want` bytes: what has arrived once the socket runs dry with HANDOFF_MIN in."""
        view = self.buffer[:want]
        filled = 0
        last_progress = time.monotonic()
        while filled < want:
            try:
                count = os.readv(self.fd, [view[filled:]])
            except BlockingIOError:
                if filled >= min(want, HANDOFF_MIN):
                    break
                poller.poll(POLL_S * 1000)
                if self.stop.is_set() or time.monotonic() - last_progress > STALL_TIMEOUT:
                    return None
                continue
            if count == 0:
                return None  # the client closed before the end of the body
            filled += count
            last_progress = time.monotonic()
        return bytes(view[:filled])

    # Loop side.

    def _deliver(self, chunk: bytes, last: bool) -> None:
        self.more = not last
        if self.cycle.response_complete or self.cycle.disconnected:
            self.credits.release()  # answered already: the rest of the body is drained unread
        else:
            self.chunks.append(chunk)
        self.cycle.message_event.set()

    def _finished(self, future: asyncio.Future[bool]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            log.error("reading a request body failed", exc_info=error)
        self.complete = not future.cancelled() and error is None and future.result()
        self.done = True
        protocol = self.protocol
        protocol.bulk = None
        if not self.complete:
            self.more = False
            self.cycle.disconnected = not self.cycle.response_complete
            self.cycle.message_event.set()
            protocol.transport.close()
            return
        self.cycle.more_body = False
        self.cycle.message_event.set()
        if protocol.parser is not None:
            protocol.parser = new_parser(protocol)
        if self.response_done:
            HttpToolsProtocol.on_response_complete(protocol)


def new_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A parser as uvicorn makes one (HttpToolsProtocol.__init__)."""
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class BulkBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose request bodies of BULK_MIN or more are read by a
    thread (see the module's docstring)."""

    bulk: BulkBody | None = None
    body_seen = 0

    def on_headers_complete(self) -> None:
        self.body_seen = 0
        super().on_headers_complete()
        cycle = self.cycle
        # An upgrade (WebSocket) creates no cycle for this request.
        if cycle is not None and cycle.scope is self.scope and self.scheme == "http":
            cycle.receive = _bulk_receive(self, cycle, cycle.receive)  # type: ignore[method-assign,assignment]

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        super().on_body(body)

    def on_response_complete(self) -> None:
        if self.bulk is not None:
            # The thread still owns the socket's input: reading resumes when it is done.
            self.bulk.answered()
            return
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bulk is not None:
            self.bulk.stop.set()
        super().connection_lost(exc)


def _bulk_receive(
    protocol: BulkBodyProtocol, cycle: RequestResponseCycle, receive: Receive
) -> Receive:
    tried = False
    bulk: BulkBody | None = None

    async def bulk_receive() -> Any:
        nonlocal tried, bulk
        if not tried:
            tried = True
            bulk = _start(protocol, cycle)
        if bulk is None:
            return await receive()
        if bulk.done and not bulk.chunks:
            return await _after_body(cycle, receive)
        # Until the thread is gone, uvicorn's own receive() must not run: it resumes reading,
        # and its parser is still in the middle of this body.
        while not (bulk.chunks or bulk.done or cycle.disconnected or cycle.response_complete):
            try:
                await cycle.message_event.wait()
            except asyncio.CancelledError:
                if not cycle.response_complete:
                    bulk.stop.set()  # the request is abandoned (a forced shutdown)
                raise
            cycle.message_event.clear()
        if cycle.disconnected or cycle.response_complete:
            return {"type": "http.disconnect"}
        if not bulk.chunks:
            return await _after_body(cycle, receive)
        body = bulk.take()
        return {"type": "http.request", "body": body, "more_body": bool(bulk.chunks) or bulk.more}

    return bulk_receive


async def _after_body(cycle: RequestResponseCycle, receive: Receive) -> Any:
    # The events our blocks set are spent: uvicorn's receive() would take one left set for an
    # empty `http.request` instead of waiting for the disconnect or the end of the response.
    cycle.message_event.clear()
    return await receive()


def _start(protocol: BulkBodyProtocol, cycle: RequestResponseCycle) -> BulkBody | None:
    """Hands the rest of the body to a thread, when the request qualifies and one is free."""
    remaining = _declared_length(cycle) - protocol.body_seen
    if (
        remaining < BULK_MIN
        or protocol.cycle is not cycle
        or protocol.pipeline
        or not cycle.more_body
        or cycle.disconnected
        or cycle.response_complete
        or protocol.transport.is_closing()
    ):
        return None
    sock = protocol.transport.get_extra_info("socket")
    if sock is None or not _slots.acquire(blocking=False):
        return None
    try:
        # The thread's own descriptor: the socket outlives a transport closed under it.
        fd = os.dup(sock.fileno())
    except OSError:  # out of descriptors: uvicorn reads this body
        _slots.release()
        return None
    bulk = BulkBody(protocol, cycle, fd, remaining)
    head = bytes(cycle.body)
    if head:
        # What uvicorn read with the headers goes first.
        bulk.chunks.append(head)
        bulk.credits.acquire()
    protocol.flow.pause_reading()
    try:
        bulk.start()
    except RuntimeError:  # the pool is shut down (the interpreter is exiting)
        os.close(fd)
        _slots.release()
        protocol.flow.resume_reading()
        return None
    cycle.body = bytearray()
    protocol.bulk = bulk
    if cycle.waiting_for_100_continue:
        protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        cycle.waiting_for_100_continue = False
    return bulk


def _declared_length(cycle: RequestResponseCycle) -> int:
    length = -1
    for name, value in cycle.scope["headers"]:
        if name == b"transfer-encoding":
            return -1
        if name == b"content-length":
            if length != -1 or not value.isdigit():
                return -1
            length = int(value)
    return length
