"""WS /v1/ws while auth cannot be asked: the client is told to come back, not that its token is bad.

The route runs under the product's server with a real JwksCache whose only auth instance accepts
connections and never answers (a hung or stopped process), before any key was loaded.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.routes_live import router
from shared.settings import Settings
from shared.tokens import JwksCache
from tests.support.asgi import served_as_product, serving_in_thread
from tests.support.net import free_port


@pytest.fixture
async def hung_auth() -> AsyncIterator[str]:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_a_token_that_cannot_be_checked_yet_closes_with_try_again_later(
    hung_auth: str,
) -> None:
    settings = Settings()
    async with httpx.AsyncClient(timeout=0.5) as client:
        app = FastAPI()
        app.include_router(router)
        tokens = JwksCache(
            client, [hung_auth], issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        app.state.gateway = types.SimpleNamespace(settings=settings, tokens=tokens)
        port = free_port()
        with serving_in_thread(served_as_product(app, port)):
            url = f"ws://127.0.0.1:{port}/v1/ws?access_token=a.b.c"
            async with connect(url) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    # 1008 would send the page to refresh a token that may be perfectly good.
    assert closed.value.rcvd.code == 1013
