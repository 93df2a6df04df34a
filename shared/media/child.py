"""A libav process: reads uploads with PyAV away from the services that receive them.

    python -m shared.media.child PARENT_PID

libavformat, libavcodec and PyAV are native code fed with hostile files. A bug in any of them
(PyAV 17.1-18.1 freed custom channel layouts twice) would otherwise abort the gateway with
every upload in flight, or the converter with every job it runs, and the broker would hand
those jobs out again into the same crash. Here it ends one process, which the parent
(`shared.media.pool`) replaces. The address space is capped too, so a file built to make a
decoder allocate gigabytes fails instead of pushing the host into swap.

Requests come one at a time on stdin (`shared.media.protocol`); the process ends at the end of
its stdin or when its parent is gone.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import IO

from shared.blobstore.filelike import BlockFile
from shared.errors import MediaError
from shared.media.libav.output import inspect_sync
from shared.media.libav.probe import probe_sync
from shared.media.libav.remux import StreamCopy
from shared.media.protocol import (
    ANSWER,
    BLOCK,
    PROGRESS,
    READ,
    REQUEST,
    Copied,
    Copy,
    Described,
    Failed,
    Inspect,
    Inspected,
    ProbeBlob,
    ProbeFile,
    encode,
    read_frame,
    requests,
    write_frame,
)

# Python, libav and a probe's decoding need a few hundred MiB of address space; decoder threads
# reserve stacks they never touch. Far above that, far below what a bomb would take.
ADDRESS_SPACE_LIMIT = 4 * 1024**3
PARENT_CHECK_SECONDS = 1.0
PROGRESS_INTERVAL = 0.5
"""Seconds between a copy's progress reports; a copy runs thousands of times faster than real
time."""

Answer = Described | Inspected | Copied | Failed


class ParentUnavailable(OSError):
    """The parent could not give a block (its store failed) or is gone."""


class Channel:
    """This process's side of the pipes; frames out may come from two threads (a copy's
    progress and its answer)."""

    def __init__(self, requests: IO[bytes], answers: IO[bytes]) -> None:
        self.requests = requests
        self.answers = answers
        self._writing = threading.Lock()

    def send(self, kind: bytes, payload: bytes) -> None:
        with self._writing:
            write_frame(self.answers, kind, payload)


class PipedBlob(BlockFile):
    """A blob the parent holds, read block by block over the pipes."""

    def __init__(self, size: int, channel: Channel) -> None:
        super().__init__(size)
        self._channel = channel

    def fetch(self, lo: int, hi: int) -> bytes:
        self._channel.send(READ, encode([lo, hi]))
        frame = read_frame(self._channel.requests)
        if frame is None:
            raise ParentUnavailable("the parent is gone")
        kind, payload = frame
        if kind != BLOCK:
            raise ParentUnavailable("the parent could not read the blob")
        return payload


def answer(payload: bytes, channel: Channel) -> Answer:
    """What to answer one request (`shared.media.protocol.Request`)."""
    try:
        request = requests.validate_json(payload)
        match request:
            case ProbeFile(path=path):
                return Described(info=probe_sync(Path(path)))
            case ProbeBlob(size=size):
                return Described(info=probe_sync(PipedBlob(size, channel)))
            case Inspect(path=path, format=output_format):
                return Inspected(media=inspect_sync(Path(path), output_format))
            case Copy():
                copy(request, channel)
                return Copied()
    except FileNotFoundError:
        return Failed(kind="missing")
    except MediaError as exc:
        return Failed(kind="media", code=exc.code, detail=exc.detail)
    except ParentUnavailable:
        return Failed(kind="unavailable")
    except Exception as exc:  # anything else is this file's doing (or a bad request): say what
        return Failed(kind="failed", detail=f"{type(exc).__name__}: {exc}"[:500])


def copy(request: Copy, channel: Channel) -> None:
    job = StreamCopy(
        Path(request.source),
        Path(request.output),
        format_name=request.format,
        track=request.track,
        tags=request.tags,
    )
    finished = threading.Event()

    def report() -> None:
        while not finished.wait(PROGRESS_INTERVAL):
            channel.send(PROGRESS, encode(job.seconds))

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        job.run()
    finally:
        finished.set()
        reporter.join()
    channel.send(PROGRESS, encode(job.seconds))  # the end, which the reports may have missed


def watch_parent(parent: int) -> None:
    """End this process once `parent` is gone, even in the middle of a request."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os._exit(1)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].isdigit():
        sys.exit("usage: python -m shared.media.child PARENT_PID")
    threading.Thread(target=watch_parent, args=(int(argv[0]),), daemon=True).start()
    # The frames go out on a private copy of stdout; fd 1 becomes stderr, so whatever a
    # library prints can never be taken for a frame.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    channel = Channel(os.fdopen(0, "rb"), answers)
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    while (frame := read_frame(channel.requests)) is not None:
        kind, payload = frame
        if kind != REQUEST:
            sys.exit(f"libav process: a {kind!r} frame where a request belongs")
        channel.send(ANSWER, answer(payload, channel).model_dump_json().encode())


if __name__ == "__main__":
    main(sys.argv[1:])
