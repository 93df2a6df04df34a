"""Large request bodies read by a thread (shared.bulkbody), under a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared import bulkbody
from tests.support.asgi import open_fds, served_as_product, serving_in_thread
from tests.support.net import free_port

SIZE = 8 * 1024 * 1024 + 321  # several blocks, and not a multiple of one


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(SIZE)


class Seen:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []


def _app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        record: dict[str, Any] = {"path": scope["path"], "threads": 0, "disconnected": False}
        seen.requests.append(record)
        digest = hashlib.sha256()
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record["disconnected"] = True
                return
            # A reader thread is busy exactly while this request's body is read by one.
            busy = bulkbody.READER_THREADS - bulkbody._slots._value
            record["threads"] = max(record["threads"], busy)
            digest.update(message["body"])
            received += len(message["body"])
            if scope["path"] == "/early" or not message.get("more_body", False):
                break
        status = 413 if scope["path"] == "/early" else 200
        body = json.dumps({"sha256": digest.hexdigest(), "bytes": received}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, Seen]]:
    seen = Seen()
    port = free_port()
    with serving_in_thread(served_as_product(_app(seen), port)):
        # Counted with the server up: uvloop opens a few descriptors once per process.
        fds = open_fds()
        yield port, seen
    for _ in range(100):  # every reader thread is back in the pool once the server is down
        if bulkbody._slots._value == bulkbody.READER_THREADS and open_fds() <= fds:
            break
        await asyncio.sleep(0.05)
    assert bulkbody._slots._value == bulkbody.READER_THREADS
    assert open_fds() <= fds  # and each closed its own descriptor for the socket


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "host: test", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode().split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(": ") for x in lines) if k == "content-length")
    body = await asyncio.wait_for(reader.readexactly(length), 30)
    return int(lines[0].split()[1]), json.loads(body)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def _expect(payload: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}


async def test_bodies_arrive_whole_over_keep_alive_and_pipelining(
    server: tuple[int, Seen], payload: bytes
) -> None:
    port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    small = b"not bulk"
    # Two large bodies, then a small request pipelined right behind the second one's last byte:
    # the thread must stop exactly at the end of each body and leave the rest to uvicorn.
    sending = asyncio.create_task(
        _send(writer, _post("/a", payload) + _post("/b", payload[::-1]) + _post("/c", small))
    )
    assert await _response(reader) == (200, _expect(payload))
    assert await _response(reader) == (200, _expect(payload[::-1]))
    assert await _response(reader) == (200, _expect(small))
    await sending
    writer.close()
    assert [r["threads"] > 0 for r in seen.requests] == [True, True, False]


async def test_expect_100_continue_is_answered_before_the_body(
    server: tuple[int, Seen], payload: bytes
) -> None:
    port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _post("/a", payload, "expect: 100-continue")
    head, body = request.split(b"\r\n\r\n", 1)
    await _send(writer, head + b"\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sending = asyncio.create_task(_send(writer, body))
    assert await _response(reader) == (200, _expect(payload))
    await sending
    writer.close()
    assert seen.requests[0]["threads"] > 0


async def test_an_early_answer_drains_the_body_and_keeps_the_connection(
    server: tuple[int, Seen], payload: bytes
) -> None:
    port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sending = asyncio.create_task(_send(writer, _post("/early", payload) + _post("/c", b"next")))
    status, _ = await _response(reader)
    assert status == 413
    assert await _response(reader) == (200, _expect(b"next"))
    await sending
    writer.close()
    assert seen.requests[0]["threads"] > 0


async def test_without_a_free_thread_uvicorn_reads_the_body(
    server: tuple[int, Seen], payload: bytes
) -> None:
    port, seen = server
    for _ in range(bulkbody.READER_THREADS):
        assert bulkbody._slots.acquire(blocking=False)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sending = asyncio.create_task(_send(writer, _post("/a", payload)))
        assert await _response(reader) == (200, _expect(payload))
        await sending
        writer.close()
    finally:
        for _ in range(bulkbody.READER_THREADS):
            bulkbody._slots.release()
    assert seen.requests[0]["threads"] == bulkbody.READER_THREADS  # all held by the test


async def test_a_client_that_leaves_mid_body_is_a_disconnect(
    server: tuple[int, Seen], payload: bytes
) -> None:
    port, seen = server
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    await _send(writer, _post("/a", payload)[: 3 * 1024 * 1024])
    await _wait_for(lambda: bool(seen.requests) and seen.requests[0]["threads"] > 0)
    raw: socket.socket = writer.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    await _wait_for(lambda: seen.requests[0]["disconnected"])
    await _wait_for(lambda: bulkbody._slots._value == bulkbody.READER_THREADS)


async def test_a_client_that_stalls_mid_body_is_dropped(
    server: tuple[int, Seen], payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulkbody, "STALL_TIMEOUT", 1.0)
    port, seen = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _send(writer, _post("/a", payload)[: 3 * 1024 * 1024])
    await _wait_for(lambda: bool(seen.requests) and seen.requests[0]["disconnected"])
    assert seen.requests[0]["threads"] > 0
    assert await reader.read() == b""  # and the connection is closed
    writer.close()


async def _wait_for(condition: Any, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_a_forced_shutdown_stops_a_reader_waiting_for_a_slow_client(payload: bytes) -> None:
    seen = Seen()
    port = free_port()
    config = served_as_product(_app(seen), port, log_level="critical", timeout_graceful_shutdown=1)
    with serving_in_thread(config) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await _send(writer, _post("/a", payload)[: 3 * 1024 * 1024])
        await _wait_for(lambda: bool(seen.requests) and seen.requests[0]["threads"] > 0)
        stopping = time.monotonic()
        server.should_exit = True
        # The client sends nothing more: without the stop, the reader would wait for it until
        # the stall timeout (60 s) and hold the process's exit.
        await _wait_for(lambda: bulkbody._slots._value == bulkbody.READER_THREADS, timeout=15)
    assert time.monotonic() - stopping < 15
    writer.close()
