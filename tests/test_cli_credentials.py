"""The CLI's credentials store: written under its lock, by `login` as by `convert`."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from services.cli.credentials import keep_login, load_refresh_token


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
