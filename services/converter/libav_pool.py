"""Reading uploads in libav processes (`libav_process`), kept warm between requests.

Starting Python and importing PyAV takes most of a second, so processes are reused: each
serves one request at a time, up to REQUESTS_PER_PROCESS (a leak in native code, or a channel
layout we deliberately never free, stays bounded), and up to IDLE_PROCESSES wait for the next.
At most MAX_PROCESSES work at once.
The exchange with a process runs in a worker thread, so one pool serves every event loop of
this process.

A process that dies mid-probe is replaced and the probe tried once more on a new one: only a
file that kills two processes is reported unreadable (the first death may have been the host's
doing, an OOM kill). A probe that does not answer within PROBE_TIMEOUT, or a request given up
(cancelled, past its deadline), has its process killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Never

from services.converter.libav_wire import (
    ANSWER,
    BLOCK,
    MAX_FRAME,
    PROGRESS,
    READ,
    REQUEST,
    UNAVAILABLE,
    ProtocolError,
    encode,
    info_from_wire,
    read_frame,
    write_frame,
)
from services.converter.probe import UNREADABLE_DETAIL, MediaInfo
from shared.blobstore.filelike import BlockFile
from shared.errors import ErrorCode, MediaError

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 120.0
REQUESTS_PER_PROCESS = 200
IDLE_PROCESSES = 4
# At most this many requests run at once (others wait for one to end): a burst of uploads must
# not start a Python process each (~70 MiB). Probes take milliseconds; a copy a second or so.
MAX_PROCESSES = max(2, min(8, os.cpu_count() or 1))
PROBE_ATTEMPTS = 2

Answer = dict[str, Any]


class LibavUnavailable(Exception):
    """No process answered the request: they died on it, or it took too long."""


class LibavProcessDied(Exception):
    """The process ended (or spoke nonsense) before it answered; it has been reaped."""


class LibavProcess:
    def __init__(self) -> None:
        # Started with CPython's subprocess (vfork), never through the loop: see child.py.
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "services.converter.libav_process", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.served = 0
        # Set under the pool's lock: the requester gave up on it (it is being killed), or it
        # is back in the pool (too late to give up on). `lease` counts its checkouts, so that
        # a requester that gives up late cannot kill it under the next one.
        self.abandoned = False
        self.returned = False
        self.lease = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exchange(
        self,
        request: Answer,
        blob: BlockFile | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> tuple[Answer, Exception | None]:
        """Send one request and serve the child's reads until it answers (a worker thread).

        Returns the answer and the exception of a failed read of `blob`, if one failed: the
        store's failure, not the file's, for the caller to raise.
        """
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        to_child, from_child = self.popen.stdin, self.popen.stdout
        fetch_error: Exception | None = None
        try:
            write_frame(to_child, REQUEST, encode(request))
            while (frame := read_frame(from_child)) is not None:
                kind, payload = frame
                if kind == ANSWER:
                    answer = json.loads(payload)
                    if not isinstance(answer, dict):
                        raise ProtocolError("an answer is an object")
                    return answer, fetch_error
                if kind == PROGRESS and on_progress is not None:
                    on_progress(float(json.loads(payload)))
                    continue
                if kind != READ or blob is None:
                    raise ProtocolError(f"a {kind!r} frame")
                lo, hi = (int(bound) for bound in json.loads(payload))
                # The child asks for blocks; a larger range would be read into this process.
                if not 0 <= lo < hi <= blob.size or hi - lo > MAX_FRAME:
                    raise ProtocolError(f"a read of [{lo}, {hi}) in {blob.size} bytes")
                try:
                    data = blob.fetch(lo, hi)
                except Exception as exc:  # handed to the caller with the answer
                    fetch_error = exc
                    write_frame(to_child, UNAVAILABLE, b"")
                else:
                    write_frame(to_child, BLOCK, data)
            reason = "no answer"
        except Exception as exc:  # whatever the child sent (OverflowError, RecursionError...)
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


class LibavPool:
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
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._idle: list[LibavProcess] = []
        self._busy: set[LibavProcess] = set()
        self._lock = threading.Lock()
        self._orphans: set[asyncio.Future[Any]] = set()

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
        MediaError(unreadable_media); see `services.converter.probe.probe_sync`."""
        if isinstance(source, Path):
            request: Answer = {"op": "probe", "path": source}
            blob = None
        else:
            request, blob = {"op": "probe", "size": source.size}, source
        try:
            answer = await self.ask(request, blob, timeout=self.probe_timeout)
        except LibavUnavailable:
            raise _unreadable() from None
        if "info" in answer:
            try:
                return info_from_wire(answer["info"])
            except ProtocolError as exc:
                log.warning("libav process answered nonsense for %s: %s", source, exc)
                raise _unreadable() from None
        raise_for(answer, source)

    async def ask(
        self, request: Answer, blob: BlockFile | None = None, *, timeout: float
    ) -> Answer:
        """The answer to a request that only reads (see `libav_process.answer`; `Path` values
        are sent absolute), or LibavUnavailable if PROBE_ATTEMPTS processes died on it or it
        took longer than `timeout`. Raises what a failed read of `blob` raised."""
        async with self._slot():
            return await self._ask(request, blob, timeout)

    async def _ask(self, request: Answer, blob: BlockFile | None, timeout: float) -> Answer:
        for attempt in range(1, PROBE_ATTEMPTS + 1):
            process = await self._take()
            lease = process.lease
            # Never cancelled: a serving job cancelled before a thread took it would never
            # run, and nothing else would reap the process or free its place.
            worker = asyncio.ensure_future(asyncio.to_thread(self._serve, process, request, blob))
            try:
                async with asyncio.timeout(timeout):
                    answer, fetch_error = await asyncio.shield(worker)
            except LibavProcessDied as exc:
                log.warning("libav process died on %s (attempt %d): %s", request, attempt, exc)
                continue
            except TimeoutError:
                self._abandon(process, lease, worker)
                log.warning("%s took over %.0f s: stopped", request, timeout)
                raise LibavUnavailable(f"no answer within {timeout:.0f} s") from None
            except BaseException:
                self._abandon(process, lease, worker)
                raise
            if fetch_error is not None:
                raise fetch_error
            return answer
        raise LibavUnavailable(f"{PROBE_ATTEMPTS} processes died on it")

    async def copy(
        self,
        request: Answer,
        *,
        on_progress: Callable[[float], Awaitable[None]] | None,
        timeout: float,
        interval: float,
    ) -> None:
        """Run a copy request (see `libav_process.answer`), calling `on_progress` with the
        seconds copied at most every `interval`. Raises MediaError as the copy does, or
        MediaError(timeout) after `timeout` seconds. However it ends, the process is done
        writing when this returns."""
        async with self._slot():
            process = await self._take()
            lease = process.lease
            copied = [0.0]  # the latest report only: the child sets the pace

            def progress(seconds: float) -> None:
                copied[0] = seconds

            worker = asyncio.ensure_future(
                asyncio.to_thread(self._serve, process, request, None, progress)
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
                    self._abandon(process, lease)
                    await _finished(worker)
            try:
                answer, _ = worker.result()
            except LibavProcessDied as exc:
                log.warning("libav process died copying %s: %s", request.get("source"), exc)
                raise _unreadable() from None
            if not answer.get("done"):
                raise_for(answer, request.get("source"))

    def _slot(self) -> asyncio.Semaphore:
        """This event loop's share of processes (a service has one loop; tests have many, one
        after another, and a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._slots.get(loop)
            if slot is None:
                slot = self._slots[loop] = asyncio.Semaphore(self.max_processes)
            return slot

    def _orphan_done(self, worker: asyncio.Future[Any]) -> None:
        self._orphans.discard(worker)
        _drop_outcome(worker)

    async def _take(self) -> LibavProcess:
        """A process for one request; cancelled meanwhile, it goes back to the pool."""
        taking = asyncio.ensure_future(asyncio.to_thread(self._checkout))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(self._give_back)
            raise

    def _give_back(self, taking: asyncio.Future[LibavProcess]) -> None:
        if taking.cancelled() or taking.exception() is not None:
            return
        process = taking.result()
        with self._lock:
            self._busy.discard(process)
            if len(self._idle) < self.max_idle:
                self._idle.append(process)
                return
        with contextlib.suppress(OSError):
            process.popen.kill()  # reaped when the Popen is collected

    def _checkout(self) -> LibavProcess:
        while True:
            with self._lock:
                process = self._idle.pop() if self._idle else None
                if process is not None:
                    self._busy.add(process)
                    process.lease += 1
                    process.returned = False
            if process is None:
                process = LibavProcess()
                with self._lock:
                    self._busy.add(process)
                    process.lease += 1
                return process
            if process.popen.poll() is None:
                return process
            with self._lock:
                self._busy.discard(process)
            process.kill()  # it ended while idle: only its pipes are left to close

    def _serve(
        self,
        process: LibavProcess,
        request: Answer,
        blob: BlockFile | None,
        on_progress: Callable[[float], None] | None = None,
    ) -> tuple[Answer, Exception | None]:
        # Absolute: the process may have been started in another working directory.
        request = {k: str(v.resolve()) if isinstance(v, Path) else v for k, v in request.items()}
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
            keep = not process.abandoned
            if keep:
                process.returned = True
                keep = not retired and len(self._idle) < self.max_idle
                if keep:
                    self._idle.append(process)
        if not keep:
            if process.abandoned:
                process.kill()
            else:
                process.close()
        if retired and not process.abandoned:
            # Its successor starts now, in this worker thread: started on demand, it made the
            # next request wait for Python and PyAV to load (0.8 s), one job in a hundred.
            self.warm(1)
        return result

    def _abandon(
        self, process: LibavProcess, lease: int, worker: asyncio.Future[Any] | None = None
    ) -> None:
        """Kill a process whose request (its checkout `lease`) was given up, unless it is back
        in the pool already. Its serving thread then sees the end of its pipe and reaps it;
        `worker`, that thread's job, is kept until then and its outcome dropped."""
        if worker is not None:
            self._orphans.add(worker)
            worker.add_done_callback(self._orphan_done)
        with self._lock:
            if process.returned or process.lease != lease:
                return
            process.abandoned = True
        with contextlib.suppress(OSError):
            process.popen.kill()


async def _finished(worker: asyncio.Future[Any]) -> None:
    """Wait for `worker`, even through further cancellations (the caller removes the job's
    directory next); then raise the cancellation, if there was one."""
    cancelled = False
    while not worker.done():
        try:
            await asyncio.wait({worker})
        except asyncio.CancelledError:
            cancelled = True
    _drop_outcome(worker)
    if cancelled:
        raise asyncio.CancelledError


def _drop_outcome(worker: asyncio.Future[Any]) -> None:
    """Retrieve a given-up worker's outcome: a killed process's exchange fails, as it should."""
    if not worker.cancelled():
        worker.exception()


def raise_for(answer: Answer, source: object) -> Never:
    """Raise the error `answer` reports, as the same request run here would have."""
    error = answer.get("error")
    if error == "missing":
        raise FileNotFoundError(source)
    if error == "media":
        try:
            code = ErrorCode(str(answer.get("code")))
        except ValueError:
            code = ErrorCode.UNREADABLE_MEDIA
        raise MediaError(str(answer.get("detail") or UNREADABLE_DETAIL), code=code)
    log.warning("libav process failed on %s: %s %s", source, error, answer.get("detail", ""))
    raise _unreadable()


def _unreadable() -> MediaError:
    return MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)


_pool = LibavPool()


def default_pool() -> LibavPool:
    """This process's pool: every service in it shares the processes."""
    return _pool


async def probe(source: Path | BlockFile) -> MediaInfo:
    """Describe `source` in a libav process; see `LibavPool.probe`."""
    return await _pool.probe(source)


async def ask(request: Answer, *, timeout: float = PROBE_TIMEOUT) -> Answer:
    return await _pool.ask(request, timeout=timeout)


async def copy(
    request: Answer,
    *,
    on_progress: Callable[[float], Awaitable[None]] | None,
    timeout: float,
    interval: float,
) -> None:
    await _pool.copy(request, on_progress=on_progress, timeout=timeout, interval=interval)


def warm(count: int) -> None:
    _pool.warm(count)


def close() -> None:
    _pool.close()
