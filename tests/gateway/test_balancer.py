"""services.gateway.balancer: which failures move a call on to the next instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.balancer import Balancer
from shared.errors import ErrorCode, Unavailable
from tests.support.asgi import served_as_product, serving_in_thread
from tests.support.net import free_port


@pytest.fixture
async def hangs_up() -> AsyncIterator[str]:
    """An instance that reads a request and closes the connection without answering (it
    crashed while handling it, after doing who knows what)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_an_instance_hanging_up_moves_only_safe_calls_on(hangs_up: str) -> None:
    calls: list[str] = []
    app = FastAPI()

    @app.api_route("/thing", methods=["GET", "POST"])
    async def thing() -> dict[str, str]:
        calls.append("answered")
        return {"ok": "yes"}

    port = free_port()
    with serving_in_thread(served_as_product(app, port)):
        async with httpx.AsyncClient(timeout=5) as client:
            balancer = Balancer(
                client, [hangs_up, f"http://127.0.0.1:{port}"], "auth", ErrorCode.AUTH_UNAVAILABLE
            )
            # Round robin starts at the first instance: the one that hangs up.
            assert (await balancer.request("GET", "/thing")).status_code == 200
            assert calls == ["answered"]
            next(balancer._next)  # back to the first instance for the POST
            with pytest.raises(Unavailable) as caught:
                await balancer.request("POST", "/thing")
            assert caught.value.code is ErrorCode.AUTH_UNAVAILABLE
            assert calls == ["answered"], "a POST the first instance may have done was re-sent"
