"""Parent side: reading media in libav processes (`shared.media.child`), kept warm between
requests.

Starting Python and importing PyAV takes most of a second, so processes are reused: each
serves one request at a time, up to REQUESTS_PER_PROCESS (a leak in native code, or a channel
layout we deliberately never free, stays bounded), and up to IDLE_PROCESSES wait for the next.
At most MAX_PROCESSES work at once. The exchange with a process runs in a worker thread.

A process that dies mid-probe is replaced and the probe tried once more on a new one: only a
file that kills two processes is reported unreadable (the first death may have been the host's
doing, an OOM kill). A probe that does not answer within PROBE_TIMEOUT, or a request given up
(cancelled, past its deadline), has its process killed.

An app's lifespan creates one `MediaPool` and closes it; whatever reads media is handed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.aio import finish_regardless, keep
from shared.blobstore.filelike import BlockFile
from shared.errors import ErrorCode, MediaError
from shared.media.info import (
    UNREADABLE_DETAIL,
    UNREADABLE_OUTPUT_DETAIL,
    MediaInfo,
    OutputMedia,
    unreadable,
)
from shared.media.protocol import (
    ANSWER,
    BLOCK,
    MAX_FRAME,
    PROGRESS,
    READ,
    REQUEST,
    UNAVAILABLE,
    Copied,
    Copy,
    Described,
    Failed,
    Inspect,
    Inspected,
    ProbeBlob,
    ProbeFile,
    ProtocolError,
    answers,
    ranges,
    read_frame,
    seconds,
    write_frame,
)

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 120.0
REQUESTS_PER_PROCESS = 200
IDLE_PROCESSES = 4
# At most this many requests run at once (others wait for one to end): a burst of uploads must
# not start a Python process each (~70 MiB). Probes take milliseconds; a copy a second or so.
MAX_PROCESSES = max(2, min(8, os.cpu_count() or 1))
PROBE_ATTEMPTS = 2
COPY_PROGRESS_INTERVAL = 0.5

Request = ProbeFile | ProbeBlob | Inspect | Copy
Answer = Described | Inspected | Copied | Failed


class LibavUnavailable(Exception):
    """No process answered the request: they died on it, or it took too long."""


class LibavProcessDied(Exception):
    """The process ended (or spoke nonsense) before it answered; it has been reaped."""


class LibavProcess:
    """One child process and the parent's end of its pipes."""

    def __init__(self) -> None:
        # Started with CPython's subprocess (vfork), never through the loop: see
        # services/converter/child.py.
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "shared.media.child", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.served = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exchange(
        self,
        request: Request,
        blob: BlockFile | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> tuple[Answer, Exception | None]:
        """Send one request and serve the child's reads until it answers (a worker thread).

        Returns the answer and the exception of a failed read of `blob`, if one failed: the
        store's failure, not the file's, for the caller to raise. Whatever else goes wrong
        (the child's death, a frame that is not ours) kills it: LibavProcessDied.
        """
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        to_child, from_child = self.popen.stdin, self.popen.stdout
        fetch_error: Exception | None = None
        try:
            write_frame(to_child, REQUEST, request.model_dump_json().encode())
            while (frame := read_frame(from_child)) is not None:
                kind, payload = frame
                if kind == ANSWER:
                    return answers.validate_json(payload), fetch_error
                if kind == PROGRESS and on_progress is not None:
                    on_progress(seconds.validate_json(payload))
                    continue
                if kind != READ or blob is None:
                    raise ProtocolError(f"a {kind!r} frame")
                lo, hi = ranges.validate_json(payload)
                # The child asks for blocks; a larger range would be read into this process.
                if not lo < hi <= blob.size or hi - lo > MAX_FRAME:
                    raise ProtocolError(f"a read of [{lo}, {hi}) in {blob.size} bytes")
                try:
                    data = blob.fetch(lo, hi)
                except Exception as exc:  # handed to the caller with the answer
                    fetch_error = exc
                    write_frame(to_child, UNAVAILABLE, b"")
                else:
                    write_frame(to_child, BLOCK, data)
            reason = "no answer"
        except Exception as exc:  # whatever the child sent (a ValidationError, RecursionError...)
            reason = f"{type(exc).__name__}: {exc}"
        self.kill()
        raise LibavProcessDied(f"{reason}; exit status {self.popen.returncode}")

    def kill(self) -> None:
        """Kill the process and wait for it (blocks: not on the loop)."""
        with contextlib.suppress(OSError):
            self.popen.kill()
        self._reap()

    def close(self) -> None:
        """Ask the process to end (the end of its stdin) and wait for it."""
        with contextlib.suppress(OSError):
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self._reap()

    def _reap(self) -> None:
        self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


@dataclass(eq=False)
class Lease:
    """One checkout of a process, for one request. Its state changes under the pool's lock:
    `returned` once the request is served (too late to give up on), `abandoned` once its
    requester gave up (the process is being killed). A late give-up finds its own lease
    returned, never the next request's."""

    process: LibavProcess
    state: Literal["serving", "returned", "abandoned"] = "serving"


class MediaPool:
    """Probe uploads, inspect outputs and stream-copy MP3 in libav processes."""

    def __init__(
        self,
        *,
        idle: int = IDLE_PROCESSES,
        requests: int = REQUESTS_PER_PROCESS,
        processes: int = MAX_PROCESSES,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.max_idle = idle
        self.max_requests = requests
        self.probe_timeout = probe_timeout
        self.max_processes = processes
        self._places = asyncio.Semaphore(processes)
        self._idle: list[LibavProcess] = []
        self._busy: set[LibavProcess] = set()
        self._lock = threading.Lock()

    def warm(self, count: int) -> None:
        """Start processes now, so that the first requests do not wait for Python to start.
        Blocks (a start is a fork and an exec): not on the loop."""
        while True:
            with self._lock:
                if len(self._idle) >= min(count, self.max_idle):
                    return
            process = LibavProcess()  # outside the lock, which the loop takes too
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(process)
                    continue
            process.close()
            return

    def close(self) -> None:
        """End the idle processes (blocks: not on the loop)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for process in idle:
            process.close()

    def pids(self) -> tuple[list[int], list[int]]:
        """The idle and the busy processes' ids (for tests and metrics)."""
        with self._lock:
            return [p.pid for p in self._idle], [p.pid for p in self._busy]

    async def probe(self, source: Path | BlockFile) -> MediaInfo:
        """Describe `source` (a local path, or a blob read through `source.fetch`), or raise
        MediaError(unreadable_media); see `shared.media.libav.probe.probe_sync`. Raises what
        a failed read of the blob raised."""
        if isinstance(source, Path):
            request: Request = ProbeFile(path=str(source))
            blob = None
        else:
            request, blob = ProbeBlob(size=source.size), source
        try:
            answer = await self._ask(request, blob, self.probe_timeout)
        except LibavUnavailable:
            raise unreadable() from None
        if isinstance(answer, Described):
            return answer.info
        raise _failure(answer, source, UNREADABLE_DETAIL)

    async def inspect(self, path: Path, output_format: str = "mp3") -> OutputMedia:
        """Describe an output we wrote in `output_format`; see
        `shared.media.libav.output.inspect_sync`."""
        request = Inspect(path=str(path), format=output_format)
        try:
            answer = await self._ask(request, None, self.probe_timeout)
        except LibavUnavailable:
            answer = Failed(kind="failed")
        if isinstance(answer, Inspected):
            return answer.media
        if isinstance(answer, Failed) and answer.kind in ("missing", "media"):
            raise _failure(answer, path, UNREADABLE_DETAIL)
        raise MediaError(UNREADABLE_OUTPUT_DETAIL, code=ErrorCode.CONVERSION_FAILED)

    async def copy(
        self,
        request: Copy,
        *,
        on_progress: Callable[[float], Awaitable[None]] | None,
        timeout: float,
        interval: float = COPY_PROGRESS_INTERVAL,
    ) -> None:
        """Run a stream copy, calling `on_progress` with the seconds copied at most every
        `interval`. Raises MediaError as the copy does, or MediaError(timeout) after `timeout`
        seconds. However it ends, the process is done writing when this returns."""
        async with self._places:
            lease = await self._take()
            copied = [0.0]  # the latest report only: the child sets the pace

            def progress(seconds: float) -> None:
                copied[0] = seconds

            worker = asyncio.ensure_future(
                asyncio.to_thread(self._serve, lease, request, None, progress)
            )
            reported = -1.0
            try:
                async with asyncio.timeout(timeout):
                    while not worker.done():
                        await asyncio.wait({worker}, timeout=interval)
                        if on_progress is not None and copied[0] > reported:
                            reported = copied[0]
                            await on_progress(reported)
            except TimeoutError:
                raise MediaError("conversion took too long", code=ErrorCode.TIMEOUT) from None
            finally:
                if not worker.done():
                    self._give_up(lease, worker)
                    # The caller removes the job's directory next: not before the child is gone.
                    await finish_regardless(worker)
            try:
                answer, _ = worker.result()
            except LibavProcessDied as exc:
                log.warning("libav process died copying %s: %s", request.source, exc)
                raise unreadable() from None
            if not isinstance(answer, Copied):
                raise _failure(answer, request.source, UNREADABLE_DETAIL)

    async def _ask(self, request: Request, blob: BlockFile | None, timeout: float) -> Answer:
        """The answer to a request that only reads, or LibavUnavailable if PROBE_ATTEMPTS
        processes died on it or it took longer than `timeout`. Raises what a failed read of
        `blob` raised."""
        async with self._places:
            for attempt in range(1, PROBE_ATTEMPTS + 1):
                lease = await self._take()
                # Never cancelled: a serving job cancelled before a thread took it would never
                # run, and nothing else would reap the process or free its place.
                worker = asyncio.ensure_future(asyncio.to_thread(self._serve, lease, request, blob))
                try:
                    async with asyncio.timeout(timeout):
                        answer, fetch_error = await asyncio.shield(worker)
                except LibavProcessDied as exc:
                    log.warning("libav process died on %s (attempt %d): %s", request, attempt, exc)
                    continue
                except TimeoutError:
                    self._give_up(lease, worker)
                    log.warning("%s took over %.0f s: stopped", request, timeout)
                    raise LibavUnavailable(f"no answer within {timeout:.0f} s") from None
                except BaseException:
                    self._give_up(lease, worker)
                    raise
                if fetch_error is not None:
                    raise fetch_error
                return answer
            raise LibavUnavailable(f"{PROBE_ATTEMPTS} processes died on it")

    async def _take(self) -> Lease:
        """A process for one request; cancelled meanwhile, it goes back to the pool."""
        taking = asyncio.ensure_future(asyncio.to_thread(self._checkout))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(self._give_back)
            raise

    def _give_back(self, taking: asyncio.Future[Lease]) -> None:
        if taking.cancelled() or taking.exception() is not None:
            return
        process = taking.result().process
        with self._lock:
            self._busy.discard(process)
            if len(self._idle) < self.max_idle:
                self._idle.append(process)
                return
        with contextlib.suppress(OSError):
            process.popen.kill()  # reaped when the Popen is collected

    def _checkout(self) -> Lease:
        while True:
            with self._lock:
                process = self._idle.pop() if self._idle else None
                if process is not None:
                    self._busy.add(process)
            if process is None:
                process = LibavProcess()
                with self._lock:
                    self._busy.add(process)
                return Lease(process)
            if process.popen.poll() is None:
                return Lease(process)
            with self._lock:
                self._busy.discard(process)
            process.kill()  # it ended while idle: only its pipes are left to close

    def _serve(
        self,
        lease: Lease,
        request: Request,
        blob: BlockFile | None,
        on_progress: Callable[[float], None] | None = None,
    ) -> tuple[Answer, Exception | None]:
        process = lease.process
        try:
            result = process.exchange(request, blob, on_progress)
        except BaseException:
            with self._lock:
                self._busy.discard(process)
            raise
        process.served += 1
        retired = process.served >= self.max_requests
        with self._lock:
            self._busy.discard(process)
            abandoned = lease.state == "abandoned"
            keep = not abandoned and not retired and len(self._idle) < self.max_idle
            if not abandoned:
                lease.state = "returned"
            if keep:
                self._idle.append(process)
        if not keep:
            if abandoned:
                process.kill()
            else:
                process.close()
        if retired and not abandoned:
            # Its successor starts now, in this worker thread: started on demand, it made the
            # next request wait for Python and PyAV to load (0.8 s), one job in a hundred.
            self.warm(1)
        return result

    def _give_up(
        self, lease: Lease, worker: asyncio.Future[tuple[Answer, Exception | None]]
    ) -> None:
        """Abandon a request whose answer nobody waits for any more: its serving thread sees
        the end of its pipe and reaps the process; `worker`, that thread's job, is kept until
        then and its outcome dropped."""
        keep(worker, "a given-up libav request", expected=(LibavProcessDied,))
        self._abandon(lease)

    def _abandon(self, lease: Lease) -> None:
        """Kill the process of a request given up, unless the request was served already (the
        process may then be serving the next one)."""
        with self._lock:
            if lease.state != "serving":
                return
            lease.state = "abandoned"
        with contextlib.suppress(OSError):
            lease.process.popen.kill()


def _failure(answer: Answer, source: object, unreadable_detail: str) -> Exception:
    """The error a failed request reports, as the same request run here would have raised."""
    if isinstance(answer, Failed) and answer.kind == "missing":
        return FileNotFoundError(source)
    if isinstance(answer, Failed) and answer.kind == "media":
        return MediaError(
            answer.detail or unreadable_detail, code=answer.code or ErrorCode.UNREADABLE_MEDIA
        )
    log.warning("libav process failed on %s: %r", source, answer)
    return unreadable()
