"""Embedded stand-ins for a one-machine install: the MongoDB-wire server (nx-27017)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from services.cli.with_parent import with_parent


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# Ports this process handed out: the kernel can offer a just-closed port again at once, and two
# services of one stack given the same port is a failure that names neither.
_given: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port


async def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1)
            writer.close()
            await writer.wait_closed()
            return
        except (OSError, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            await asyncio.sleep(0.1)


def nx_27017_command(data_dir: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("nx-27017")
    return [
        str(exe),
        "--data-dir",
        str(data_dir),
        "-p",
        str(port),
        "--log-file",
        str(data_dir / "nx-27017.log"),
        # Its default pid file is global (/tmp/nx_27017.pid): a second instance would refuse to
        # start while another one runs.
        "--pid-file",
        str(data_dir / "nx-27017.pid"),
    ]


async def start_embedded_mongo(
    data_dir: Path, preferred_port: int = 27017
) -> tuple[asyncio.subprocess.Process, int]:
    """Start nx-27017 on a data directory; returns the process and its port, which it may not
    listen on yet (`wait_for_port`): what needs it can start meanwhile."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
    port = preferred_port if port_is_free(preferred_port) else free_port()
    proc = await asyncio.create_subprocess_exec(
        *with_parent(nx_27017_command(data_dir, port)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc, port
