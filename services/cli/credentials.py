"""Where the CLI keeps its refresh token, and how it gets an access token."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx


class LoginError(Exception):
    pass


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "video2mp3"


def _store_path() -> Path:
    return config_dir() / "credentials.json"


def load_refresh_token(server: str) -> str | None:
    path = _store_path()
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        return None
    token = stored.get(server)
    return token if isinstance(token, str) else None


def save_refresh_token(server: str, token: str) -> None:
    """Keep the token readable by this user only (mode 0600, written atomically)."""
    path = _store_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    stored[server] = token
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f)
    os.replace(tmp, path)


async def password_login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/auth/login", data={"username": email, "password": password})
    if response.status_code != 200:
        raise LoginError(_detail(response))
    tokens: dict[str, str] = response.json()
    return tokens


async def access_token(client: httpx.AsyncClient, server: str) -> str:
    """From VIDEO2MP3_EMAIL/VIDEO2MP3_PASSWORD, else the stored refresh token (rotated)."""
    email = os.environ.get("VIDEO2MP3_EMAIL")
    password = os.environ.get("VIDEO2MP3_PASSWORD")
    if email and password:
        return (await password_login(client, email, password))["access_token"]
    refresh = await asyncio.to_thread(load_refresh_token, server)
    if refresh is None:
        raise LoginError(
            "not logged in: run `video2mp3 login` or set VIDEO2MP3_EMAIL and VIDEO2MP3_PASSWORD"
        )
    response = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
    if response.status_code != 200:
        raise LoginError(f"the stored login expired ({_detail(response)}); run `video2mp3 login`")
    tokens = response.json()
    await asyncio.to_thread(save_refresh_token, server, tokens["refresh_token"])
    token: str = tokens["access_token"]
    return token


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text or f"HTTP {response.status_code}"
