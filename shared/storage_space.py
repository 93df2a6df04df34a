"""Free space where bytes are about to land: the blob store, a converter's work directory."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from shared.blobstore import BlobStore, FileBlobStore, GridFSBlobStore
from shared.errors import ErrorCode, InsufficientStorage, Unavailable

log = logging.getLogger(__name__)


def _free_at(path: Path) -> int:
    # The directory may not exist yet (a fresh VAR_DIR): its nearest existing parent holds it.
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except FileNotFoundError:
            continue
        return stats.f_bavail * stats.f_frsize
    raise FileNotFoundError(path)


async def free_bytes_at(path: Path) -> int:
    return await asyncio.to_thread(_free_at, path)


async def blob_store_free_bytes(blobs: BlobStore) -> int | None:
    """Bytes free under the store; None when it cannot tell.

    GridFS: MongoDB's `dbStats` reports the size and use of the filesystem holding its data
    (`fsTotalSize`, `fsUsedSize`, MongoDB 4.4+); a server that does not report them (nx-27017,
    a managed service) is not checked: its operator watches that disk.
    """
    if isinstance(blobs, FileBlobStore):
        return await free_bytes_at(blobs.root)
    if isinstance(blobs, GridFSBlobStore):
        stats = await blobs.db.command("dbStats")
        total, used = stats.get("fsTotalSize"), stats.get("fsUsedSize")
        if isinstance(total, int | float) and isinstance(used, int | float):
            return int(total - used)
    return None


async def ensure_upload_space(blobs: BlobStore, min_free: int, incoming: int = 0) -> None:
    """Refuse (507) an upload of up to `incoming` bytes that would leave under `min_free`."""
    if min_free <= 0:
        return
    free = await blob_store_free_bytes(blobs)
    if free is not None and free - incoming < min_free:
        log.warning("upload refused: %d bytes free under the blob store", free)
        raise InsufficientStorage("the server is short of storage space; please try again later")


async def ensure_work_space(blobs: BlobStore, work_dir: Path, min_free: int) -> None:
    """Unavailable (an outage: the job's message is held and retried, never failed) while the
    work directory or the blob store has under `min_free` bytes free."""
    if min_free <= 0:
        return
    free = [await free_bytes_at(work_dir), await blob_store_free_bytes(blobs)]
    if any(f is not None and f < min_free for f in free):
        raise Unavailable(
            f"too little free space for a conversion ({min(f for f in free if f is not None)}"
            f" bytes, under {min_free})",
            code=ErrorCode.INSUFFICIENT_STORAGE,
        )
