"""Uploads are read in libav processes: a crash, a hang or a memory bomb there ends that
process, never the service, and the pool goes on with new ones."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.blobstore.filelike import BlockFile
from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from shared.media.child import ADDRESS_SPACE_LIMIT
from shared.media.pool import LibavProcess, LibavProcessDied
from shared.media.protocol import ProbeBlob, ProbeFile
from tests.support.media import MediaFactory


class FileBlocks(BlockFile):
    """A local file served as a blob, with a hook run on every fetch (in the pool's thread)."""

    def __init__(self, path: Path, on_fetch: Callable[[], object] | None = None) -> None:
        super().__init__(path.stat().st_size)
        self.path = path
        self.on_fetch = on_fetch

    def fetch(self, lo: int, hi: int) -> bytes:
        if self.on_fetch is not None:
            self.on_fetch()
        with self.path.open("rb") as f:
            f.seek(lo)
            return f.read(hi - lo)


def _eventually(condition: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _gone(pid: int) -> bool:
    return _eventually(lambda: not Path(f"/proc/{pid}").exists())


@pytest.fixture
def pool() -> Iterator[MediaPool]:
    pool = MediaPool()
    yield pool
    pool.close()


def _crash_busy(pool: MediaPool, times: int) -> tuple[Callable[[], None], list[int]]:
    """A fetch hook that kills the process reading the blob, as a native crash would, on
    each of the first `times` attempts; and the pids it killed."""
    killed: list[int] = []

    def hook() -> None:
        [busy] = pool.pids()[1]
        if len(killed) < times and busy not in killed:
            killed.append(busy)
            os.kill(busy, signal.SIGSEGV)
            _gone_or_zombie(busy)

    return hook, killed


def _gone_or_zombie(pid: int) -> None:
    for _ in range(100):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.02)


async def test_a_process_that_dies_mid_probe_is_replaced_and_the_probe_tried_again(
    media: MediaFactory, pool: MediaPool, caplog: pytest.LogCaptureFixture
) -> None:
    source = media.mp3_in_avi(4)
    hook, killed = _crash_busy(pool, times=1)
    with caplog.at_level(logging.WARNING, logger="shared.media.pool"):
        info = await pool.probe(FileBlocks(source, hook))
    assert info.duration == pytest.approx(4, abs=0.1)
    assert [t.codec for t in info.audio_tracks] == ["mp3"]
    assert len(killed) == 1
    assert _gone(killed[0])
    assert "died on" in caplog.text


async def test_a_file_that_kills_every_process_is_unreadable_and_the_pool_goes_on(
    media: MediaFactory, pool: MediaPool
) -> None:
    source = media.mp3_in_avi(4)
    hook, killed = _crash_busy(pool, times=10)
    with pytest.raises(MediaError) as caught:
        await pool.probe(FileBlocks(source, hook))
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert len(killed) == 2  # tried twice, then given up
    assert all(_gone(pid) for pid in killed)
    assert (await pool.probe(source)).duration == pytest.approx(4, abs=0.1)


async def test_a_probe_that_hangs_is_killed_at_its_timeout(
    media: MediaFactory, tmp_path: Path
) -> None:
    pool = MediaPool()
    await pool.probe(media.mp3_in_avi(4))  # a process ready, however slow its start on this host
    pool.probe_timeout = 1.5
    release = threading.Event()
    stuck: list[int] = []

    def hang() -> None:
        stuck.extend(pool.pids()[1])
        release.wait(30)

    try:
        started = time.monotonic()
        with pytest.raises(MediaError) as caught:
            await pool.probe(FileBlocks(media.mp3_in_avi(4), hang))
        assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
        assert time.monotonic() - started < 10
    finally:
        release.set()
    assert _gone(stuck[0])
    assert _eventually(lambda: pool.pids() == ([], []))  # its thread lets go of it last
    pool.close()


async def test_a_cancelled_probe_kills_its_process(media: MediaFactory, pool: MediaPool) -> None:
    release = threading.Event()
    stuck: list[int] = []

    def hang() -> None:
        stuck.extend(pool.pids()[1])
        release.wait(30)

    task = asyncio.create_task(pool.probe(FileBlocks(media.mp3_in_avi(4), hang)))
    try:
        while not stuck:
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()
    assert _gone(stuck[0])


async def test_a_probe_cancelled_while_its_process_starts_leaves_it_to_the_pool(
    media: MediaFactory, pool: MediaPool
) -> None:
    # A request given up while its process is being checked out (in a thread: a start may
    # block) must neither leak the process nor leave it counted as busy. One turn of the loop
    # takes the task to its first wait, the checkout.
    source = media.mp3_in_avi(2)
    task = asyncio.create_task(pool.probe(source))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(_eventually, lambda: len(pool.pids()[0]) == 1)
    idle, busy = pool.pids()
    assert busy == []
    info = await pool.probe(source)
    assert info.duration == pytest.approx(2, abs=0.1)
    assert pool.pids()[0] == idle


async def test_a_failing_store_is_the_stores_error_and_the_process_is_kept(
    media: MediaFactory, pool: MediaPool
) -> None:
    def outage() -> None:
        raise ConnectionError("the blob store is down")

    with pytest.raises(ConnectionError):
        await pool.probe(FileBlocks(media.mp3_in_avi(4), outage))
    [kept], busy = pool.pids()
    assert busy == []
    assert (await pool.probe(media.mp3_in_avi(4))).audio_tracks
    assert pool.pids() == ([kept], [])


async def test_processes_are_reused_and_retired_after_their_share(
    media: MediaFactory,
) -> None:
    pool = MediaPool(requests=3)
    source = media.mp3_in_avi(4)
    try:
        await pool.probe(source)
        [first], _ = pool.pids()
        await pool.probe(source)
        assert pool.pids() == ([first], [])
        await pool.probe(source)
        [second], busy = pool.pids()  # its third request was its last; a successor waits
        assert second != first
        assert busy == []
        assert _gone(first)
        # Started at the retirement, so it loads Python and PyAV before the next request.
        await pool.probe(source)
        assert pool.pids() == ([second], [])
    finally:
        pool.close()


async def test_a_libav_process_has_its_address_space_capped(
    media: MediaFactory, pool: MediaPool
) -> None:
    await pool.probe(media.mp3_in_avi(4))
    [pid], _ = pool.pids()
    limits = Path(f"/proc/{pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max address space")]
    assert line.split()[3:5] == [str(ADDRESS_SPACE_LIMIT)] * 2


# The process is asked something first: it watches its parent only once Python and PyAV have
# loaded, which under a load of 25 took 3-4 s, most of the 5 s the test waits.
WARM_AND_WAIT = """
import asyncio, sys, time
from pathlib import Path
from shared.media import MediaPool
pool = MediaPool()
try:
    asyncio.run(pool.probe(Path("/nonexistent")))
except FileNotFoundError:
    pass
print(pool.pids()[0][0], flush=True)
time.sleep(60)
"""


def test_a_libav_process_ends_with_a_killed_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", WARM_AND_WAIT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        parent.kill()
        parent.wait()
        assert _gone(child)
    finally:
        parent.kill()
        parent.wait()


async def test_a_burst_of_requests_shares_a_bounded_number_of_processes(
    media: MediaFactory,
) -> None:
    pool = MediaPool(processes=2)
    release = threading.Event()
    source = media.mp3_in_avi(4)
    try:
        probes = [
            asyncio.create_task(pool.probe(FileBlocks(source, lambda: release.wait(30))))
            for _ in range(5)
        ]
        await asyncio.sleep(1.5)
        idle, busy = pool.pids()
        assert (len(idle), len(busy)) == (0, 2)
        release.set()
        described = await asyncio.gather(*probes)
        assert all(info.duration == pytest.approx(4, abs=0.1) for info in described)
        assert len(pool.pids()[0]) == 2
    finally:
        release.set()
        pool.close()


async def test_a_request_given_up_late_leaves_the_next_ones_process_alone(
    media: MediaFactory, pool: MediaPool
) -> None:
    # A request's timeout or cancellation can land after its process went back to the pool
    # and was taken by the next request: that request's process must not be killed.
    source = media.mp3_in_avi(2)
    await pool.probe(source)
    [pid], _ = pool.pids()
    previous = await pool._take()
    await asyncio.to_thread(pool._serve, previous, ProbeFile(path=str(source)), None)  # served
    lease = await pool._take()
    process = lease.process
    assert process.pid == pid
    pool._abandon(previous)  # the previous request's lease
    assert process.popen.poll() is None
    pool._abandon(lease)  # its own holder's gives it up
    assert _gone_or_killed(process.popen)


def _gone_or_killed(popen: subprocess.Popen[bytes]) -> bool:
    try:
        return popen.wait(5) == -signal.SIGKILL
    except subprocess.TimeoutExpired:
        return False


# Each: what a compromised child could send after a request; the parent must kill it and go
# on, holding nothing it asked for.
HOSTILE_FRAMES = {
    "progress past a float": b"P" + b"1" + b"0" * 400,
    "a read of everything": b"R" + b"[0,1099511627776]",
    "a read past its end": b"R" + b"[0,5000]",
    "a read at infinity": b"R" + b"[1e999,0]",
    "nesting past the stack": b"R" + b"[" * 100_000,
}


@pytest.mark.parametrize("frame", HOSTILE_FRAMES.values(), ids=HOSTILE_FRAMES.keys())
def test_a_child_that_sends_nonsense_is_killed(frame: bytes, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 4096)
    fetched: list[int] = []
    blob = FileBlocks(source, lambda: fetched.append(1))
    kind, payload = frame[:1], frame[1:]
    script = (
        "import struct, sys, time\n"
        "head = sys.stdin.buffer.read(5); sys.stdin.buffer.read(struct.unpack('>cI', head)[1])\n"
        f"payload = {payload!r}\n"
        f"sys.stdout.buffer.write(struct.pack('>cI', {kind!r}, len(payload)) + payload)\n"
        "sys.stdout.buffer.flush(); time.sleep(60)\n"
    )
    process = LibavProcess.__new__(LibavProcess)
    process.popen = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    with pytest.raises(LibavProcessDied):
        process.exchange(ProbeBlob(size=blob.size), blob, on_progress=lambda _: None)
    assert process.popen.returncode == -signal.SIGKILL
    assert fetched == []
