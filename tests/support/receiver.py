"""A webhook receiver on loopback: records every request, answers with the status it is told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.asgi import serving
from tests.support.net import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    # Status answered per path; 204 where none is set.
    status: dict[str, int] = field(default_factory=dict)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.on(path)) < count:
            assert time.monotonic() < deadline, f"{len(self.on(path))} of {count} on {path}"
            await asyncio.sleep(0.1)
        return self.on(path)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Received(request.url.path, dict(request.headers), body))
        return Response(status_code=self.status.get(request.url.path, 204))


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver(port=free_port())
    app = Starlette(routes=[Route("/{path:path}", receiver._handle, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=receiver.port, log_level="warning")
    async with serving(config):
        yield receiver
