"""The one interface through which video and audio bytes are stored and read back."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Protocol


class BlobNotFound(LookupError):
    """No blob with this id exists (or it was only partly written and then discarded)."""


class BlobStore(Protocol):
    """Bytes by id. Writes are all-or-nothing: a failed or cancelled write leaves nothing behind."""

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        """Store a stream under a new id; returns the number of bytes written."""
        ...

    async def write_file(self, blob_id: str, path: Path) -> int:
        """Store a local file (the converter's output); the file itself is left in place."""
        ...

    def read(self, blob_id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes `start`..`end` (inclusive, like an HTTP Range; None = to the end)."""
        ...

    async def size(self, blob_id: str) -> int:
        """Size in bytes; raises BlobNotFound."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove a blob; deleting a missing one is not an error."""
        ...

    def local_path(self, blob_id: str) -> Path | None:
        """A path FFmpeg can read in place, or None when the bytes are not on a local disk."""
        ...

    async def check(self) -> None:
        """Raise if the backend is unreachable (readiness probes)."""
        ...
