"""FFmpeg as a child process, started without forking the converter.

Under uvloop, asyncio's subprocess API goes through libuv's `uv_spawn`, which fork()s on
Linux: the kernel copies the page tables of the whole converter (PyAV, buffers, the loop)
and the process, GIL held, waits until the child has exec'd. That took 4.6 ms from a
100 MiB process, 7-10 ms per FFmpeg run in the running converter, every job paying it
before FFmpeg could start. CPython's own `subprocess` starts the same child with vfork in
~0.2 ms. So `subprocess.Popen` starts it, and the loop watches its pipes (`add_reader`,
`add_writer`) and its exit (a pidfd, where Linux has them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

READ_BYTES = 64 * 1024


class PipeWriter:
    """The child's standard input: writes wait while the pipe is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        os.set_blocking(fd, False)
        self._loop = loop
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    async def write(self, data: bytes) -> None:
        """All of `data`; BrokenPipeError once the child has stopped reading."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                await self._writable()

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self._loop.create_future()

        def on_writable() -> None:
            if not ready.done():
                ready.set_result(None)

        self._loop.add_writer(self._fd, on_writable)
        try:
            await ready
        finally:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class Child:
    """A started child: its output as StreamReaders, its input as a PipeWriter (or None)."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        self.stdin: PipeWriter | None = None
        self._readers: list[int] = []
        try:
            self.stdin = self._writer(popen)
            self.stdout = self._reader(popen.stdout)
            self.stderr = self._reader(popen.stderr)
            self._exited = self._watch_exit()
        except BaseException:
            self.close()
            for pipe in (popen.stdin, popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
            raise

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def close(self) -> None:
        """Stop watching the pipes and close them (after the child has been reaped)."""
        for fd in self._readers:
            self._loop.remove_reader(fd)
            os.close(fd)
        self._readers.clear()
        if self.stdin is not None:
            self.stdin.close()

    def _writer(self, popen: subprocess.Popen[bytes]) -> PipeWriter | None:
        if popen.stdin is None:
            return None
        # Our own descriptor: the file object would close it again when collected.
        fd = os.dup(popen.stdin.fileno())
        popen.stdin.close()
        return PipeWriter(self._loop, fd)

    def _reader(self, pipe: IO[bytes] | None) -> asyncio.StreamReader:
        assert pipe is not None
        fd = os.dup(pipe.fileno())
        pipe.close()
        os.set_blocking(fd, False)
        reader = asyncio.StreamReader(limit=READ_BYTES)
        self._readers.append(fd)

        def readable() -> None:
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                reader.feed_data(data)
                return
            self._loop.remove_reader(fd)
            self._readers.remove(fd)
            os.close(fd)
            reader.feed_eof()

        self._loop.add_reader(fd, readable)
        return reader

    def _watch_exit(self) -> asyncio.Future[int]:
        exited: asyncio.Future[int] = self._loop.create_future()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd (not Linux, a kernel before 5.3, a seccomp filter): a thread of its own
            # waits, not one of the shared pool that the job's file I/O needs.
            def wait() -> None:
                returncode = self._popen.wait()
                self._loop.call_soon_threadsafe(_settle, exited, returncode)

            threading.Thread(target=wait, name=f"wait-{self.pid}", daemon=True).start()
            return exited

        def on_exit() -> None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            # The child is a zombie by now: this reaps it without blocking.
            _settle(exited, self._popen.wait())

        self._loop.add_reader(pidfd, on_exit)
        return exited


def _settle(exited: asyncio.Future[int], returncode: int) -> None:
    if not exited.done():
        exited.set_result(returncode)


async def start_child(cmd: Sequence[str], *, stdin: bool) -> Child:
    """Start `cmd` in a session (process group) of its own, its output piped to us."""
    loop = asyncio.get_running_loop()
    # On the loop's thread on purpose: vfork + exec take ~0.2 ms, less than a hop to a worker
    # thread, and far less than the fork uvloop would do here.
    popen = subprocess.Popen(  # noqa: ASYNC220
        list(cmd),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Its own process group, so a kill reaches anything FFmpeg may spawn as well.
        start_new_session=True,
    )
    try:
        return Child(popen, loop)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
