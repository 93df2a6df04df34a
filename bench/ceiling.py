"""The "plain static file server" of the transfer benchmark: nginx when installed, else uvicorn.

nginx (sendfile for GET, the DAV module's PUT into a file for uploads) is the honest ceiling;
where it is missing, a bare ASGI app under uvicorn (uvloop + httptools, as the gateway runs)
serves GET from a file in 1 MiB reads and stores PUT bodies in a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

NGINX_CONF = """
daemon off;
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/body;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location /up/ {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
"""


@contextlib.contextmanager
def static_server(root: Path, port: int, *, python: bool = False) -> Iterator[tuple[str, str]]:
    """Serves `root/www`; PUT /up/NAME stores a file. Yields (base URL, server name).

    `python` picks the bare uvicorn app even where nginx is installed: the floor of any Python
    server on this machine, against which the gateway's own work is measured."""
    (root / "www" / "up").mkdir(parents=True, exist_ok=True)
    (root / "body").mkdir(exist_ok=True)
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx and not python:
        conf = root / "nginx.conf"
        # As root, nginx's workers would run as `nobody` and could not write the PUT files.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(root=root, port=port, user=user))
        cmd = [nginx, "-c", str(conf), "-p", str(root), "-e", str(root / "error.log")]
        name = "nginx (sendfile, DAV PUT)"
    else:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.ceiling:make_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        name = "uvicorn bare ASGI (uvloop, httptools)"
    env = {**os.environ, "CEILING_ROOT": str(root / "www")}
    proc = subprocess.Popen(cmd, env=env, cwd=str(Path(__file__).resolve().parent.parent))
    try:
        _wait(port)
        yield f"http://127.0.0.1:{port}", name
    finally:
        proc.terminate()
        proc.wait(10)


def _wait(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError("ceiling server did not start")


def make_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    root = Path(os.environ["CEILING_ROOT"])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = root / scope["path"].lstrip("/")
        if scope["method"] == "PUT":
            with path.open("wb") as f:
                more = True
                while more:
                    message = await receive()
                    f.write(message.get("body", b""))
                    more = message.get("more_body", False)
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        size = path.stat().st_size
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app
