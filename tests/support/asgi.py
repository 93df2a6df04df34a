"""An ASGI app served by a real uvicorn inside the test process, on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the test process keeps its own Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[QuietServer]:
    """Serve `config` until the block ends; a server that fails to start raises here."""
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started serving")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def serving_in_thread(config: uvicorn.Config) -> Iterator[QuietServer]:
    """Serve `config` on its own event loop in a thread, as `video2mp3 serve` runs it (uvloop
    with `loop="auto"`): code that reasons about the loop's transports is tested on that loop."""
    server = QuietServer(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn stopped before it started serving")
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(60)
        if thread.is_alive():
            raise RuntimeError("uvicorn did not stop")


def served_as_product(app: Any, port: int, **overrides: Any) -> uvicorn.Config:
    """`app` on loopback under the server `video2mp3 serve` runs: our protocol on uvloop."""
    from shared.server_protocol import ServerProtocol

    settings: dict[str, Any] = {"lifespan": "off", "log_level": "warning", **overrides}
    return uvicorn.Config(
        app, host="127.0.0.1", port=port, http=ServerProtocol, loop="uvloop", **settings
    )


def open_fds() -> int:
    """Descriptors this process holds (Linux)."""
    return len(os.listdir("/proc/self/fd"))
