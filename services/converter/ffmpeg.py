"""Run one FFmpeg command (built by `plan.py`).

`describe_failure` is pure; `run_ffmpeg` owns the subprocess: progress from stdout, a bounded
stderr tail, and a kill of the whole process group on timeout or cancellation so no FFmpeg
outlives the job that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
from collections.abc import AsyncIterable, Awaitable, Callable

from services.converter.child import Child, PipeWriter, start_child
from services.converter.progress import ProgressParser
from shared.errors import ErrorCode, MediaError
from shared.media.failures import describe_failure, input_was_truncated

ProgressCallback = Callable[[float], Awaitable[None]]

STDERR_TAIL_BYTES = 8 * 1024
# Linux's default pipe holds 64 KiB: FFmpeg would wake for every 64 KiB of a piped source. 1 MiB
# is the unprivileged maximum (fs.pipe-max-size).
STDIN_PIPE_BYTES = 1024 * 1024
F_SETPIPE_SZ = 1031
# Ends before the 24 h after which RabbitMQ (consumer_timeout in compose.yaml) hands the job to
# another converter.
MAX_CONVERSION_SECONDS = 20 * 3600.0
UNKNOWN_DURATION_SECONDS = 3600.0


class FFmpegFailed(MediaError):
    """FFmpeg exited badly; `stderr` keeps the (bounded, path-redacted) tail for the logs."""

    def __init__(
        self, detail: str, *, code: ErrorCode, stderr: str = "", returncode: int | None = None
    ) -> None:
        super().__init__(detail, code=code)
        self.stderr = stderr
        self.returncode = returncode


def timeout_for(
    duration: float | None, passes: int = 1, *, base: float = 60.0, factor: float = 2.0
) -> float:
    """The one time limit of a conversion, every pass included: generous for slow disks,
    bounded for stuck decoders (FFMPEG_TIMEOUT_BASE + FFMPEG_TIMEOUT_FACTOR * duration a pass).

    MP3 encoding runs tens of times faster than real time, so twice the duration only trips
    on something pathological.
    """
    if duration is None or duration <= 0:
        per_pass = max(base, UNKNOWN_DURATION_SECONDS)
    else:
        per_pass = base + factor * duration
    return min(per_pass * passes, MAX_CONVERSION_SECONDS)


async def run_ffmpeg(
    cmd: list[str],
    *,
    duration: float | None,
    on_progress: ProgressCallback | None,
    timeout: float,
    stdin: AsyncIterable[bytes] | None = None,
) -> str:
    """Run FFmpeg to completion, reporting seconds done (non-decreasing) to `on_progress`.

    With `stdin`, its bytes are written into FFmpeg's standard input (a command reading
    `pipe:0`) while FFmpeg runs; an error raised by `stdin` itself (the blob store failing
    mid-read) is raised in place of whatever FFmpeg made of the cut-off input.

    Returns the (bounded, path-redacted) tail of stderr, which is where filters such as
    ebur128 print what they measured. Raises FFmpegFailed (a MediaError) on a failed run or a
    truncated input, MediaError(timeout) after `timeout` seconds; on cancellation the process
    group is killed and reaped first.
    """
    process = await start_child(cmd, stdin=stdin is not None)
    tail = _Tail(STDERR_TAIL_BYTES)
    stderr_task = asyncio.create_task(_drain(process.stderr, tail))
    feed_task: asyncio.Task[None] | None = None
    if stdin is not None:
        assert process.stdin is not None
        feed_task = asyncio.create_task(_feed(process.stdin, stdin))
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await _follow_progress(process.stdout, duration, on_progress)
            returncode = await process.wait()
            await stderr_task
            if feed_task is not None:
                await feed_task
    except TimeoutError:
        if not deadline.expired():
            raise  # a timeout of the input's own (a socket's), not of the conversion
        await _kill_and_reap(process)
        raise MediaError("conversion took too long", code=ErrorCode.TIMEOUT) from None
    finally:
        # Cancellation, a failing progress callback, or anything else: never leave FFmpeg
        # running (or unreaped) behind us.
        await _kill_and_reap(process)
        for task in (stderr_task, feed_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        process.close()

    stderr = _redact(tail.text(), cmd)
    if returncode != 0 or input_was_truncated(stderr):
        code, detail = describe_failure(stderr, returncode, truncated_tail=tail.truncated)
        raise FFmpegFailed(detail, code=code, stderr=stderr, returncode=returncode)
    return stderr


async def _feed(pipe: PipeWriter, chunks: AsyncIterable[bytes]) -> None:
    """Write `chunks` into FFmpeg's stdin, then close it (end of input)."""
    _widen_pipe(pipe)
    try:
        async for chunk in chunks:
            await pipe.write(chunk)
    except (BrokenPipeError, ConnectionResetError):
        # FFmpeg stopped reading: it reached `-to`, or failed and says why on stderr.
        pass
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # stops the blob read (and its prefetch) when FFmpeg ended early
        pipe.close()


def _widen_pipe(pipe: PipeWriter) -> None:
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, STDIN_PIPE_BYTES)


async def _follow_progress(
    stdout: asyncio.StreamReader, duration: float | None, on_progress: ProgressCallback | None
) -> None:
    parser = ProgressParser()
    reported = -1.0
    async for raw in stdout:
        seconds = parser.feed(raw.decode("utf-8", "replace"))
        if seconds is None or on_progress is None:
            continue
        if duration is not None and duration > 0:
            seconds = min(seconds, duration)
        if seconds > reported:
            reported = seconds
            await on_progress(seconds)


async def _drain(stream: asyncio.StreamReader, tail: _Tail) -> None:
    while chunk := await stream.read(4096):
        tail.add(chunk)


async def _kill_and_reap(process: Child) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    # Shielded so a second cancellation cannot skip the wait; the event loop's child watcher
    # reaps the process even then.
    await asyncio.shield(process.wait())


class _Tail:
    """The last `limit` bytes written: FFmpeg can print errors for every broken frame."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _redact(stderr: str, cmd: list[str]) -> str:
    """Hide server paths: the detail reaches users, and the log needs no more than a role."""
    for argument, label in _file_arguments(cmd):
        path = argument.removeprefix("file:")
        stderr = stderr.replace(argument, label).replace(path, label)
    return stderr


def _file_arguments(cmd: list[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for position, argument in enumerate(cmd):
        if argument.startswith("file:") and len(argument) > len("file:"):
            is_input = position > 0 and cmd[position - 1] == "-i"
            found.append((argument, "<input>" if is_input else "<output>"))
    # Longest first, so a path that prefixes another is not replaced inside it.
    return sorted(found, key=lambda item: len(item[0]), reverse=True)
