"""A blob as a read-only, seekable file object, for libraries that read files synchronously.

PyAV (libavformat) reads through `read`/`seek`/`tell` from a worker thread; the blob store is
async and belongs to the event loop. `BlobFile` bridges the two: each missing block is fetched
on the loop with a ranged `read` while the worker thread waits, and the last few blocks stay
cached, because demuxers re-read headers and jump between a file's start and end.
`BlockFile` is that cache alone, for files whose blocks come from elsewhere (the probe
process asks its parent for them).
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict

from shared.blobstore.base import MIB, BlobStore

BLOCK_SIZE = MIB
CACHED_BLOCKS = 8
FETCH_TIMEOUT = 60.0


class BlockFile(io.RawIOBase):
    """`size` bytes read in aligned blocks of `block_size` from `fetch`, the last
    `cached_blocks` of them kept."""

    def __init__(
        self, size: int, *, block_size: int = BLOCK_SIZE, cached_blocks: int = CACHED_BLOCKS
    ) -> None:
        super().__init__()
        self.size = size
        self.block_size = block_size
        self.cached_blocks = cached_blocks
        self.position = 0
        self.fetched_bytes = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def fetch(self, lo: int, hi: int) -> bytes:
        """Bytes `lo` to `hi` (exclusive) of the file."""
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self.position + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"unsupported whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self.position = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if self.position >= end:
            return b""
        parts: list[bytes] = []
        pos = self.position
        while pos < end:
            index, offset = divmod(pos, self.block_size)
            block = self._block(index)
            piece = block[offset : offset + (end - pos)]
            if not piece:
                break  # shorter than its recorded size: end here rather than spin
            parts.append(piece)
            pos += len(piece)
        self.position = pos
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _block(self, index: int) -> bytes:
        cached = self._blocks.get(index)
        if cached is not None:
            self._blocks.move_to_end(index)
            return cached
        lo = index * self.block_size
        data = self.fetch(lo, min(self.size, lo + self.block_size))
        self.fetched_bytes += len(data)
        self._blocks[index] = data
        while len(self._blocks) > self.cached_blocks:
            self._blocks.popitem(last=False)
        return data


class BlobFile(BlockFile):
    """`size` bytes of blob `blob_id`, fetched through `loop`.

    Only for worker threads: called on the loop's own thread, a fetch would wait for itself
    (until `timeout`).
    """

    def __init__(
        self,
        store: BlobStore,
        blob_id: str,
        size: int,
        loop: asyncio.AbstractEventLoop,
        *,
        block_size: int = BLOCK_SIZE,
        cached_blocks: int = CACHED_BLOCKS,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        super().__init__(size, block_size=block_size, cached_blocks=cached_blocks)
        self.store = store
        self.blob_id = blob_id
        self.loop = loop
        self.timeout = timeout

    def fetch(self, lo: int, hi: int) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._fetch(lo, hi), self.loop)
        try:
            return future.result(self.timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _fetch(self, lo: int, hi: int) -> bytes:
        # The store's `end` is inclusive, like an HTTP Range.
        parts = [chunk async for chunk in self.store.read(self.blob_id, lo, hi - 1)]
        return parts[0] if len(parts) == 1 else b"".join(parts)
