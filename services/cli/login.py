"""`video2mp3 login`: ask for email and password once, keep a refresh token and the server."""

from __future__ import annotations

import asyncio
import getpass
import sys

import httpx

from services.cli.credentials import LoginError, keep_login, password_login


async def _login(server: str, email: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        try:
            tokens = await password_login(client, server, email, password)
        except (LoginError, httpx.HTTPError) as exc:
            print(f"video2mp3: login failed: {exc}", file=sys.stderr)
            return 1
    await keep_login(server, tokens["refresh_token"])
    print(f"logged in to {server} as {email}; `video2mp3 convert` uses this server from now on")
    return 0


def login(server: str) -> int:
    try:
        email = input("email: ").strip()
        password = getpass.getpass("password: ")
    except (EOFError, KeyboardInterrupt):
        # Ctrl-D, Ctrl-C or no terminal at all: nothing was sent, nothing is kept.
        print("\nvideo2mp3: login cancelled", file=sys.stderr)
        return 1
    if not email or not password:
        print("video2mp3: login needs an email and a password", file=sys.stderr)
        return 1
    return asyncio.run(_login(server, email, password))
