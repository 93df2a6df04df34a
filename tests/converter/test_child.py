"""The FFmpeg child process: started without a fork, pipes both ways, exit, kill, no leaks.

Run on uvloop, as the converter is: that is where asyncio's own subprocess API forks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from services.converter.child import start_child
from tests.support.asgi import open_fds

T = TypeVar("T")

ECHO_REVERSED = (
    "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1]);"
    " sys.stderr.write('done'); sys.exit(3)"
)

_forks_seen = 0


def _count_fork() -> None:
    global _forks_seen
    _forks_seen += 1


os.register_at_fork(after_in_parent=_count_fork)


def on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


async def _nothing() -> None:
    pass


@pytest.fixture(autouse=True, scope="module")
def _uvloop_warmed_up() -> None:
    on_uvloop(_nothing())  # uvloop keeps a few descriptors of its own from its first loop on


def test_pipes_both_ways_and_the_exit_status() -> None:
    payload = os.urandom(3 * 1024 * 1024)  # more than any pipe buffer: writes must wait

    async def run() -> tuple[bytes, bytes, int]:
        child = await start_child([sys.executable, "-c", ECHO_REVERSED], stdin=True)
        assert child.stdin is not None

        async def feed() -> None:
            await child.stdin.write(payload)  # type: ignore[union-attr]
            child.stdin.close()  # type: ignore[union-attr]

        out, err, _ = await asyncio.gather(child.stdout.read(), child.stderr.read(), feed())
        code = await child.wait()
        child.close()
        return out, err, code

    before = open_fds()
    out, err, code = on_uvloop(run())
    assert (out, err, code) == (payload[::-1], b"done", 3)
    assert open_fds() == before


def test_a_killed_child_is_reaped_and_its_pipes_closed() -> None:
    async def run() -> int:
        child = await start_child(["sleep", "30"], stdin=False)
        assert child.returncode is None
        os.killpg(child.pid, signal.SIGKILL)
        code = await asyncio.wait_for(child.wait(), 5)
        assert await child.stdout.read() == b""
        child.close()
        return code

    before = open_fds()
    assert on_uvloop(run()) == -signal.SIGKILL
    assert open_fds() == before


def test_ffmpeg_is_not_started_through_uvloops_fork() -> None:
    # uvloop's subprocess API (libuv's fork) runs Python's fork handlers in the parent, which
    # this test can see; CPython's subprocess, which uses vfork here, runs none. (A regression
    # to a plain fork inside CPython's subprocess would not show here; its speed would.)
    async def ours() -> None:
        child = await start_child(["true"], stdin=False)
        await child.wait()
        child.close()

    async def uvloops() -> None:
        process = await asyncio.create_subprocess_exec("true")
        await process.wait()

    before = _forks_seen
    on_uvloop(ours())
    assert _forks_seen == before
    on_uvloop(uvloops())
    assert _forks_seen > before


def test_without_pidfds_a_thread_of_its_own_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a kernel before 5.3 or under a seccomp filter that refuses pidfd_open.
    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)

    async def run() -> int:
        child = await start_child([sys.executable, "-c", "import sys; sys.exit(7)"], stdin=False)
        code = await asyncio.wait_for(child.wait(), 10)
        child.close()
        return code

    assert on_uvloop(run()) == 7
