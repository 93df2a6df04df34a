"""The one interface through which video and audio bytes are stored and read back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

MIB = 1024 * 1024

_BLOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class BlobNotFound(LookupError):
    """No blob with this id exists (or it was only partly written and then discarded)."""


class PartialOffsetMismatch(ValueError):
    """An append to a partial blob at an offset other than its current length."""

    def __init__(self, blob_id: str, length: int) -> None:
        super().__init__(f"partial blob {blob_id} holds {length} bytes")
        self.length = length


class InvalidBlobId(ValueError):
    """A blob id with characters other than [A-Za-z0-9_-], empty, or longer than 128."""


def validate_blob_id(blob_id: str) -> str:
    # Ids become file names and Mongo filenames: a strict alphabet rules out path traversal,
    # hidden files and anything a shell or URL would need to quote.
    if not isinstance(blob_id, str) or not _BLOB_ID.fullmatch(blob_id):
        raise InvalidBlobId(f"invalid blob id {blob_id!r}")
    return blob_id


def byte_span(start: int, end: int | None, size: int) -> tuple[int, int]:
    """The half-open span [lo, hi) of an inclusive range clipped to a blob of `size` bytes.

    lo >= hi means nothing to read (a start at or past the end is not an error here: mapping it
    to 416 is the HTTP layer's business).
    """
    if start < 0:
        raise ValueError(f"range start {start} is negative")
    if end is not None and end < start:
        raise ValueError(f"range end {end} is before start {start}")
    hi = size if end is None else min(end + 1, size)
    return start, hi


class BlobStore(Protocol):
    """Bytes by id.

    Blob ids match [A-Za-z0-9_-]{1,128}; any other id raises InvalidBlobId (a ValueError).

    Writes are all-or-nothing: the blob becomes visible in one step (the commit) after the last
    byte is stored durably. A write that fails or is cancelled before its commit leaves nothing
    behind, not even partial data. The commit itself is not interruptible: a cancellation that
    arrives during it is raised once the commit has finished, and the blob then exists. Writing
    an id that already exists replaces the old bytes atomically (readers see old or new, never a
    mix); ids are meant to be fresh, so this is the exception.
    """

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream under an id; returns the number of bytes written.

        Any exception the source raises propagates unchanged after the partial data is removed.
        """
        ...

    async def write_file(self, blob_id: str, path: Path) -> int:
        """Store a local file (the converter's output); the file itself is left in place.

        The file backend may hard-link the file instead of copying it, so the caller must not
        modify the file in place afterwards (deleting or replacing it is fine).
        """
        ...

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes `start`..`end` (inclusive, like an HTTP Range; None = to the end).

        An async generator: BlobNotFound is raised on the first iteration, not by the call.
        `end` past the last byte is clipped; a start past the end yields nothing; a negative
        start or an end before start raises ValueError. BlobNotFound can also come mid-stream
        when the blob is deleted while being read (GridFS; a file being read stays readable).
        Both backends return an async generator: when stopping early, close it (`aclose()`, or
        `contextlib.aclosing`) so its file descriptor or prefetch query is released at once
        rather than when it is garbage-collected.
        """
        ...

    async def size(self, blob_id: str) -> int:
        """Size in bytes; raises BlobNotFound."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove a blob; deleting a missing one is not an error."""
        ...

    def local_path(self, blob_id: str) -> Path | None:
        """A path FFmpeg can read in place, or None when the bytes are not on a local disk.

        Does no I/O: the path is returned whether or not the blob exists.
        """
        ...

    async def check(self) -> None:
        """Raise if the backend is unreachable (readiness probes)."""
        ...

    def list_blobs(self, older_than: datetime) -> AsyncIterator[str]:
        """Ids of the stored blobs written before `older_than` (for the orphan sweep)."""
        ...

    async def remove_leftovers(self, older_than: datetime) -> int:
        """Remove what interrupted writes left behind before `older_than`; returns the count."""
        ...

    # --- Partial blobs: bytes that arrive over several requests (resumable uploads) ---
    # A partial blob is invisible to read, size and list_blobs until committed, and is never
    # removed by remove_leftovers: its owner deletes it (or commits it). One append at a time
    # per partial blob; the caller serialises them.

    async def create_partial(self, blob_id: str) -> None:
        """Start an empty partial blob; nothing happens when one already exists."""
        ...

    async def partial_length(self, blob_id: str) -> int:
        """Bytes the partial blob holds durably; raises BlobNotFound when there is none."""
        ...

    async def partial_head(self, blob_id: str, n: int) -> bytes:
        """The first `n` bytes of the partial blob (fewer when it holds fewer)."""
        ...

    async def append_partial(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        """Add a stream at `offset`, which must be the current length (else
        PartialOffsetMismatch); returns the new length once the bytes are durable.

        All or nothing: an append that raises (or a crash during it) leaves the length it had
        before, and whatever it wrote past that is dropped by the next append or the commit.
        Memory stays bounded by a few blocks whatever the stream's length.
        """
        ...

    async def commit_partial(self, blob_id: str) -> int:
        """Turn the partial blob into an ordinary one under the same id; returns its size.

        Idempotent: committing again once it is committed returns the blob's size; raises
        BlobNotFound when neither a partial nor a committed blob exists.
        """
        ...

    async def delete_partial(self, blob_id: str) -> None:
        """Remove a partial blob; removing a missing one is not an error."""
        ...
