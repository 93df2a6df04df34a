"""The zero-copy file bodies of shared.pathsend, under a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import pathsend
from shared.pathsend import PATHSEND
from tests.support.asgi import open_fds, served_as_product, serving_in_thread
from tests.support.net import free_port

SIZE = 24 * 1024 * 1024 + 123  # several sendfile blocks and not a multiple of any of them


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pathsend") / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _app(path: Path, seen: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        seen.append(dict(scope.get("extensions") or {}))
        if scope["path"] == "/small":
            body = b"plain body"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        headers = [] if scope["path"] == "/chunked" else [(b"content-length", str(SIZE).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": PATHSEND, "path": str(path)})

    return app


@pytest.fixture
async def server(big_file: Path) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    port = free_port()
    with serving_in_thread(served_as_product(_app(big_file, seen), port)):
        yield f"http://127.0.0.1:{port}", seen


async def test_file_goes_out_whole_and_the_connection_serves_the_next_request(
    server: tuple[str, list[dict[str, Any]]], big_file: Path
) -> None:
    url, seen = server
    expected = big_file.read_bytes()
    fds = open_fds()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(2):  # the same keep-alive connection, twice
            response = await client.get("/file")
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == SIZE
            assert response.content == expected
        small = await client.get("/small")
        assert small.content == b"plain body"
    assert all(PATHSEND in extensions for extensions in seen)
    # The sending thread's own descriptor for the socket is closed with each file.
    for _ in range(100):
        if open_fds() <= fds:
            break
        await asyncio.sleep(0.05)
    assert open_fds() <= fds


async def test_without_content_length_or_free_threads_the_file_is_streamed(
    server: tuple[str, list[dict[str, Any]]], big_file: Path
) -> None:
    url, _ = server
    expected = big_file.read_bytes()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        chunked = await client.get("/chunked")
        assert chunked.headers.get("transfer-encoding") == "chunked"
        assert chunked.content == expected
        for _ in range(pathsend.SENDFILE_THREADS):
            assert pathsend._slots.acquire(blocking=False)
        try:
            busy = await client.get("/file")
        finally:
            for _ in range(pathsend.SENDFILE_THREADS):
                pathsend._slots.release()
        assert busy.content == expected


async def test_a_client_that_leaves_mid_file_frees_its_thread(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /file HTTP/1.1\r\nhost: test\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"200 OK" in head
    await reader.readexactly(1024 * 1024)
    # An abortive close (RST), as a client that crashed would leave.
    raw: socket.socket = writer.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    for _ in range(200):
        if pathsend._slots._value == pathsend.SENDFILE_THREADS:
            break
        await asyncio.sleep(0.05)
    assert pathsend._slots._value == pathsend.SENDFILE_THREADS
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/small")).content == b"plain body"


class _SentHeaders:
    """A transport whose response headers are already on the wire."""

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def _descriptors_of(sock: socket.socket) -> list[str]:
    target = f"socket:[{os.fstat(sock.fileno()).st_ino}]"
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                found.append(fd)
    return found


async def test_a_cancelled_response_keeps_its_slot_until_its_thread_is_done(
    tmp_path: Path,
) -> None:
    # Sixteen clients that read nothing: every sending thread waits in poll(2). A cancelled
    # response's slot may only come free once its thread has seen the stop and closed its
    # descriptor; free before that, the next response would queue in the pool behind busy
    # threads instead of being streamed, and a queued one cancelled in turn leaked its socket.
    path = tmp_path / "sparse.bin"
    with path.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    for _ in range(pathsend.SENDFILE_THREADS):
        client = socket.create_connection(listener.getsockname())
        served, _ = listener.accept()
        served.setblocking(False)
        pairs.append((client, served))
    cycle: Any = types.SimpleNamespace(transport=_SentHeaders())
    tasks = []
    try:
        for _, served in pairs:
            assert pathsend._slots.acquire(blocking=False)  # as send_with_pathsend does
            length = path.stat().st_size
            tasks.append(
                asyncio.create_task(pathsend._sendfile(cycle, served.fileno(), str(path), length))
            )
        # Each thread has filled its socket and waits in a poll of POLL_MS (500 ms); the cancel
        # lands in the middle of one, so the thread sees it only ~250 ms later.
        await asyncio.sleep(0.75)
        victim = pairs[3][1]
        assert len(_descriptors_of(victim)) == 2  # ours and the thread's dup
        tasks[3].cancel()
        await asyncio.sleep(0.01)
        assert pathsend._slots._value == 0, "the slot came free while its thread still ran"
        for _ in range(100):
            if pathsend._slots._value == 1:
                break
            await asyncio.sleep(0.02)
        assert pathsend._slots._value == 1
        assert _descriptors_of(victim) == [str(victim.fileno())]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(100):
            if pathsend._slots._value == pathsend.SENDFILE_THREADS:
                break
            await asyncio.sleep(0.02)
        for client, served in pairs:
            client.close()
            served.close()
        listener.close()
    assert pathsend._slots._value == pathsend.SENDFILE_THREADS
