"""Where the CLI keeps its refresh token, and how it gets an access token."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept out of `up` and `serve`, which import this module for the server
    import httpx


class LoginError(Exception):
    pass


DEFAULT_SERVER = "http://127.0.0.1:8000"
# The store's key for the server of the last `video2mp3 login`; the others hold URLs.
_SERVER_KEY = "server"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "video2mp3"


def _store_path() -> Path:
    return config_dir() / "credentials.json"


def _read_store() -> dict[str, Any]:
    path = _store_path()
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
    except ValueError:
        return {}
    return stored if isinstance(stored, dict) else {}


def load_refresh_token(server: str) -> str | None:
    token = _read_store().get(server)
    return token if isinstance(token, str) else None


def save_refresh_token(server: str, token: str) -> None:
    """Keep the token readable by this user only (mode 0600, written atomically)."""
    _save(server, token, None)


async def keep_login(server: str, token: str) -> None:
    """save_refresh_token, and `server` as the one to use when none is named, under the store's
    lock: a `convert` refreshing or keeping a device token at the same moment would otherwise
    write back what it read before this."""
    async with _store_locked():
        await asyncio.to_thread(_save, server, token, None, remember=True)


def resolve_server(named: str | None) -> str:
    """The server a command talks to: the one named on the command line, else
    VIDEO2MP3_SERVER, else the one of the last `video2mp3 login`, else the local default."""
    server = named or os.environ.get("VIDEO2MP3_SERVER")
    if not server:
        try:
            remembered = _read_store().get(_SERVER_KEY)
        except OSError:  # unreadable: as if there had been no login
            remembered = None
        server = remembered if isinstance(remembered, str) else DEFAULT_SERVER
    return server.rstrip("/")


def _save(
    server: str, refresh_token: str, access: dict[str, Any] | None, *, remember: bool = False
) -> None:
    stored = _read_store()
    stored[server] = refresh_token
    if remember:
        stored[_SERVER_KEY] = server
    if access is None:
        stored.pop(_access_key(server), None)  # a new login: the old access token goes
    else:
        stored[_access_key(server)] = access
    _write_store(stored)


def _write_store(stored: dict[str, Any]) -> None:
    path = _store_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f)
    os.replace(tmp, path)


async def password_login(
    client: httpx.AsyncClient, server: str, email: str, password: str
) -> dict[str, str]:
    """Log in, presenting and then keeping this machine's device token for the account: strangers'
    failed logins then cannot lock it out (auth's throttle counts a known device on its own)."""
    form = {"username": email, "password": password}
    device = await asyncio.to_thread(_load_device_token, server, email)
    if device is not None:
        form["device_token"] = device
    response = await client.post("/v1/auth/login", data=form)
    if response.status_code != 200:
        raise LoginError(_detail(response))
    tokens: dict[str, str] = response.json()
    if isinstance(tokens.get("device_token"), str):
        # A script with VIDEO2MP3_EMAIL/PASSWORD may run where it cannot write (a read-only
        # home): the login stands, only the device stays unknown.
        with contextlib.suppress(OSError):
            async with _store_locked():
                await asyncio.to_thread(_save_device_token, server, email, tokens["device_token"])
    return tokens


def _device_key(server: str, email: str) -> str:
    return f"device {server} {email.strip().lower()}"


def _load_device_token(server: str, email: str) -> str | None:
    try:
        token = _read_store().get(_device_key(server, email))
    except OSError:  # unreadable: as if this machine had never logged in
        return None
    return token if isinstance(token, str) else None


def _save_device_token(server: str, email: str, token: str) -> None:
    stored = _read_store()
    stored[_device_key(server, email)] = token
    _write_store(stored)


async def access_token(client: httpx.AsyncClient, server: str) -> str:
    """VIDEO2MP3_API_KEY as it is (a key is sent where a token is), else a token from
    VIDEO2MP3_EMAIL/VIDEO2MP3_PASSWORD, else from the stored login.

    The stored refresh token is single-use (auth rotates it and takes a second use for theft,
    ending the login), so two runs at once must not both spend it: the refresh happens under a
    file lock, and the access token it gives is kept beside it for the next run to reuse while
    it is valid.
    """
    api_key = os.environ.get("VIDEO2MP3_API_KEY", "").strip()
    if api_key:
        return api_key
    email = os.environ.get("VIDEO2MP3_EMAIL")
    password = os.environ.get("VIDEO2MP3_PASSWORD")
    if email and password:
        return (await password_login(client, server, email, password))["access_token"]
    async with _store_locked():
        cached = await asyncio.to_thread(_load_access_token, server)
        if cached is not None:
            return cached
        refresh = await asyncio.to_thread(load_refresh_token, server)
        if refresh is None:
            raise LoginError(
                "not logged in: run `video2mp3 login` or set VIDEO2MP3_EMAIL and VIDEO2MP3_PASSWORD"
            )
        response = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
        if response.status_code != 200:
            raise LoginError(
                f"the stored login expired ({_detail(response)}); run `video2mp3 login`"
            )
        tokens = response.json()
        token: str = tokens["access_token"]
        expires_at = time.time() + float(tokens.get("expires_in", 0))
        await asyncio.to_thread(
            _save, server, tokens["refresh_token"], {"token": token, "expires_at": expires_at}
        )
        return token


# An access token kept for reuse is used only while it has this long left to live.
ACCESS_TOKEN_MARGIN = 120.0


@contextlib.asynccontextmanager
async def _store_locked() -> AsyncIterator[None]:
    path = config_dir() / "credentials.lock"
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
    fd = await asyncio.to_thread(os.open, path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the lock


def _access_key(server: str) -> str:
    return f"access {server}"


def _load_access_token(server: str) -> str | None:
    entry = _read_store().get(_access_key(server))
    if not isinstance(entry, dict):
        return None
    token, expires_at = entry.get("token"), entry.get("expires_at")
    fresh = isinstance(expires_at, int | float) and expires_at - time.time() > ACCESS_TOKEN_MARGIN
    return token if isinstance(token, str) and fresh else None


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text or f"HTTP {response.status_code}"
