"""The reference tus client (tus-js-client, under Node) and a TCP proxy that cuts connections,
for the resumable-upload tests of the API, the CLI and the page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TUS_DIR = Path(__file__).resolve().parent.parent / "tus"


def node_client() -> Path:
    """The script that runs tus-js-client; its npm packages are installed when missing."""
    if shutil.which("node") is None:
        raise RuntimeError("Node is missing: `apt-get install -y nodejs npm` (tests/run.sh does)")
    if not (TUS_DIR / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=TUS_DIR,
            check=True,
            timeout=300,
        )
    return TUS_DIR / "upload.mjs"


async def run_node_upload(
    endpoint: str, file: Path, token: str, storage: Path, retries: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Upload `file` with tus-js-client; the exit code and the lines it printed."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(node_client()),
        endpoint,
        str(file),
        token,
        str(storage),
        str(retries),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"node failed: {err.decode()[-2000:]}")
    return proc.returncode, lines


@dataclass
class CuttingProxy:
    """Forwards 127.0.0.1:`port` to `target`. The first connection to carry `cut_after` bytes
    from its client is cut there: dropped both ways, or with `stall`, kept open while what the
    client sends next is swallowed (a network gone quiet) until the client goes away. `sent`
    counts each connection's client bytes that reached the server."""

    target: int
    cut_after: int | None
    stall: bool = False
    port: int = 0
    sent: list[int] = field(default_factory=list)
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    cut_index: int | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.sent)
        self.sent.append(0)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.cut_index == index:
                    continue  # the stalled connection: swallowed
                limit = None if self.cut.is_set() else self.cut_after
                if limit is not None and self.sent[index] + len(data) >= limit:
                    up_writer.write(data[: limit - self.sent[index]])
                    self.sent[index] = limit
                    self.cut.set()
                    self.cut_index = index
                    if not self.stall:
                        return
                    continue
                self.sent[index] += len(data)
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                # An abortive close: the peer sees a reset, as when a network goes away.
                with contextlib.suppress(Exception):
                    w.transport.abort()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self
