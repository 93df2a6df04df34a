#!/usr/bin/env python3
"""Container health check: GET /healthz on the port the service in this container listens on.

The image runs every service (`video2mp3 serve NAME [--port N] [--host H]`), so the port is found
the way `serve` finds it: `--port` on the command line of PID 1, else the `<NAME>_PORT` setting,
else the service's default. Standard library only; exits 0 when healthy, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_PORTS = {"gateway": 8000, "auth": 8001, "notification": 8002, "converter": 8003}
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def parse_command(argv: Sequence[str]) -> tuple[str | None, int | None, str | None]:
    """(service name, --port, --host) from a `video2mp3 serve NAME ...` command line."""
    name: str | None = None
    port: int | None = None
    host: str | None = None
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "serve" and i + 1 < len(args) and args[i + 1] in DEFAULT_PORTS:
            name = args[i + 1]
        elif arg == "--port" and i + 1 < len(args):
            port = int(args[i + 1])
        elif arg.startswith("--port="):
            port = int(arg.split("=", 1)[1])
        elif arg == "--host" and i + 1 < len(args):
            host = args[i + 1]
        elif arg.startswith("--host="):
            host = arg.split("=", 1)[1]
    return name, port, host


def health_url(argv: Sequence[str], env: Mapping[str, str]) -> str:
    name, port, host = parse_command(argv)
    if port is None:
        service = name or "gateway"
        port = int(env.get(f"{service.upper()}_PORT", DEFAULT_PORTS[service]))
    host = host if host is not None else env.get("BIND_HOST", "127.0.0.1")
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main_command_line() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def main() -> int:
    url = health_url(main_command_line(), os.environ)
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed http URL)
            return 0 if response.status == 200 else 1
    except Exception as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
