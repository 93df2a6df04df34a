"""The CLI's credentials store: written under its lock, by `login` as by `convert`."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from services.cli.credentials import DEFAULT_SERVER, keep_login, load_refresh_token, resolve_server


async def test_keeping_a_login_waits_for_the_stores_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `login` wrote the store without the lock: a `convert` refreshing its token at the same
    # moment could write back what it had read before, and the new login was lost.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    lock = tmp_path / "video2mp3" / "credentials.lock"
    lock.parent.mkdir()
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another run, mid-refresh
        kept = asyncio.create_task(keep_login("http://server", "new refresh token"))
        await asyncio.sleep(0.5)
        assert not kept.done()
        assert load_refresh_token("http://server") is None
    finally:
        os.close(holder)
    await asyncio.wait_for(kept, 10)
    assert load_refresh_token("http://server") == "new refresh token"


def test_the_server_is_the_named_one_else_the_environments_else_the_last_logins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After `login --server URL`, a plain `convert` went to 127.0.0.1:8000 again.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("VIDEO2MP3_SERVER", raising=False)
    assert resolve_server(None) == DEFAULT_SERVER
    asyncio.run(keep_login("https://v2m.example.org/", "refresh token"))
    assert resolve_server(None) == "https://v2m.example.org"
    monkeypatch.setenv("VIDEO2MP3_SERVER", "http://env.example.org:8000")
    assert resolve_server(None) == "http://env.example.org:8000"
    assert resolve_server("http://named.example.org/") == "http://named.example.org"
