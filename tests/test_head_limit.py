"""The request-head cap of shared/server_protocol.py: a 431 that reaches the client."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.asgi import served_as_product, serving_in_thread
from tests.support.net import free_port


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_client_that_sends_its_huge_head_at_once_still_reads_the_431() -> None:
    port = free_port()
    with serving_in_thread(served_as_product(_app, port)):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # Far more than the cap in one go, then read only later: the server answers and
            # ends while most of it is still unread on its side.
            writer.write(b"GET / HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * 4 * 1024 * 1024)
            await writer.drain()
            await asyncio.sleep(0.5)
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code":"headers_too_large"' in answer.replace(b" ", b"")
