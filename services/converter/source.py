"""An upload kept in a blob store that is not on this host's disk (GridFS), as FFmpeg gets it.

The file store's blobs are local files, which FFmpeg reads in place. A remote blob is either
piped into FFmpeg while it is being fetched, when the container reads front to back and one
pass does the job, or copied to a temp file first (seeks, several passes, a cover frame).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from shared.blobstore import BlobFile, BlobStore
from shared.media import MediaInfo, MediaPool


@dataclass(frozen=True)
class StoredSource:
    store: BlobStore
    blob_id: str
    size: int

    async def probe(self, libav: MediaPool) -> MediaInfo:
        """Probe through ranged reads: only the blocks the demuxer asks for are fetched."""
        loop = asyncio.get_running_loop()
        return await libav.probe(BlobFile(self.store, self.blob_id, self.size, loop))

    def chunks(self) -> AsyncIterator[bytes]:
        return self.store.read(self.blob_id)

    async def copy_to(self, path: Path) -> Path:
        sink = await asyncio.to_thread(path.open, "wb")
        try:
            async for chunk in self.chunks():
                await asyncio.to_thread(sink.write, chunk)
        finally:
            await asyncio.to_thread(sink.close)
        return path
