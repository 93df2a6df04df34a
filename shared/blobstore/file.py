"""Blobs as files in a directory (a local disk, or a volume shared by several hosts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from pathlib import Path

from shared.aio import keep, shielded
from shared.blobstore._aio import (
    ThreadFile,
    off_loop,
    pread_blocks,
    pwrite_all,
)
from shared.blobstore.base import (
    MIB,
    BlobNotFound,
    PartialOffsetMismatch,
    byte_span,
    validate_blob_id,
)
from shared.blobstore.writeback import start_writeback

# Group-readable so that services running as different users of one group can share a volume.
FILE_MODE = 0o640
TEMP_SUFFIX = ".tmp"
# A partial blob is `.<id>.<durable length>.part`: hidden from listings like a temp file, but
# never taken for a leftover. Its name carries its length because a rename is atomic: after a
# crash the name tells how many bytes were fsynced, whatever the file's size says.
PARTIAL_SUFFIX = ".part"
# Enough to keep a thread writing while the loop hands over the next block; each holds a block.
WRITES_IN_FLIGHT = 3


class FileBlobStore:
    """`root/<id[:2]>/<id>`; writes go to a hidden temp file beside it, renamed in at the end.

    The two-character fan-out keeps directories small. A temp file starts with "." and ends in
    ".tmp", so it can never be mistaken for a blob; a crash can leave one behind, harmlessly.
    """

    def __init__(self, root: Path, *, block_size: int = MIB) -> None:
        self.root = root
        self.block_size = block_size

    def path_of(self, blob_id: str) -> Path:
        validate_blob_id(blob_id)
        return self.root / blob_id[:2] / blob_id

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        final = self.path_of(blob_id)
        temp = await _TempFile.create(final)
        try:
            size = await _copy_stream(temp.file, chunks, self.block_size)
            await temp.file.call(os.fsync)
            await shielded(temp.commit(final), "committing a blob", wait=True)
        except BaseException:
            await shielded(temp.discard(), "discarding an unfinished blob", wait=True)
            raise
        return size

    async def write_file(self, blob_id: str, path: Path) -> int:
        final = self.path_of(blob_id)
        staged, size = await off_loop(
            lambda: _stage_copy(path, final), undo=lambda done: _unlink_quietly(done[0])
        )
        try:
            await shielded(
                asyncio.to_thread(_commit, staged, final), "committing a blob", wait=True
            )
        except BaseException:
            await shielded(
                asyncio.to_thread(_unlink_quietly, staged), "discarding a staged blob", wait=True
            )
            raise
        return size

    async def read(
        self, blob_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_of(blob_id)
        byte_span(start, end, 0)  # argument errors before any I/O
        try:
            f = await ThreadFile.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        try:
            # Blobs are replaced by rename, never rewritten, so this descriptor keeps seeing one
            # complete version even if the id is deleted or rewritten meanwhile.
            lo, hi = byte_span(start, end, (await f.call(os.fstat)).st_size)
            async for block in pread_blocks(f, lo, hi, self.block_size):
                yield block
        finally:
            await shielded(f.close(), "closing a blob", wait=True)

    async def size(self, blob_id: str) -> int:
        path = self.path_of(blob_id)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        return st.st_size

    async def delete(self, blob_id: str) -> None:
        # The fan-out directory stays: removing it would race with a write creating its temp
        # file there.
        await asyncio.to_thread(_unlink_quietly, self.path_of(blob_id))

    def local_path(self, blob_id: str) -> Path | None:
        return self.path_of(blob_id)

    async def list_blobs(self, older_than: datetime) -> AsyncIterator[str]:
        for blob_id in await asyncio.to_thread(_list_committed, self.root, older_than.timestamp()):
            yield blob_id

    async def remove_leftovers(self, older_than: datetime) -> int:
        return await asyncio.to_thread(_remove_stale_temps, self.root, older_than.timestamp())

    async def check(self) -> None:
        await asyncio.to_thread(_probe_writable, self.root)

    async def create_partial(self, blob_id: str) -> None:
        await shielded(
            asyncio.to_thread(_create_partial, self.path_of(blob_id)),
            "creating a partial blob",
            wait=True,
        )

    async def partial_length(self, blob_id: str) -> int:
        return (await self._find_partial(blob_id))[1]

    async def partial_head(self, blob_id: str, n: int) -> bytes:
        path, length = await self._find_partial(blob_id)
        f = await ThreadFile.open(path, os.O_RDONLY)
        try:
            return b"".join([b async for b in pread_blocks(f, 0, min(n, length), self.block_size)])
        finally:
            await shielded(f.close(), "closing a blob", wait=True)

    async def append_partial(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        path, length = await self._find_partial(blob_id)
        if length != offset:
            raise PartialOffsetMismatch(blob_id, length)
        f = await ThreadFile.open(path, os.O_WRONLY)
        try:
            # Past the length is what a failed or crashed append left: never part of the blob.
            await f.call(os.ftruncate, length)
            added = await _copy_stream(f, chunks, self.block_size, start=length)
            if added:
                await f.call(os.fsync)
        finally:
            await shielded(f.close(), "closing a blob", wait=True)
        if added:
            renamed = path.with_name(_partial_name(blob_id, length + added))
            await shielded(
                asyncio.to_thread(_commit, path, renamed), "committing a blob", wait=True
            )
        return length + added

    async def commit_partial(self, blob_id: str) -> int:
        return await shielded(
            asyncio.to_thread(_commit_partial, self.path_of(blob_id)),
            "committing a partial blob",
            wait=True,
        )

    async def delete_partial(self, blob_id: str) -> None:
        found = await asyncio.to_thread(_find_partial, self.path_of(blob_id))
        if found is not None:
            await asyncio.to_thread(_unlink_quietly, found[0])

    async def _find_partial(self, blob_id: str) -> tuple[Path, int]:
        found = await asyncio.to_thread(_find_partial, self.path_of(blob_id))
        if found is None:
            raise BlobNotFound(blob_id)
        return found


class _TempFile:
    """The file a write streams into, then renamed over the blob's path (or removed)."""

    def __init__(self, file: ThreadFile, path: Path) -> None:
        self.file = file
        self.path = path
        self.committed = False

    @classmethod
    async def create(cls, final: Path) -> _TempFile:
        fd, name = await off_loop(lambda: _make_temp(final), undo=_close_and_unlink)
        return cls(ThreadFile(fd), Path(name))

    async def commit(self, final: Path) -> None:
        await self.file.close()
        await asyncio.to_thread(_commit, self.path, final)
        self.committed = True

    async def discard(self) -> None:
        await self.file.close()
        if not self.committed:
            await asyncio.to_thread(_unlink_quietly, self.path)


async def _copy_stream(
    out: ThreadFile, chunks: AsyncIterable[bytes], block: int, *, start: int = 0
) -> int:
    # Small pieces (an HTTP body arrives in ~64 KiB) are gathered into one write per block, so
    # the cost of a thread hop is paid per MiB, not per piece. Blocks are written by worker
    # threads while the next ones are gathered, up to WRITES_IN_FLIGHT at once, each at its own
    # offset: awaiting each write before reading on stalled the socket (the server stops reading
    # while its small body buffer is full), and with one write at a time the file sat idle
    # between blocks while the loop woke up to hand over the next (upload 1.25 s/GiB -> 0.96).
    size = 0
    pending: list[bytes] = []
    pending_len = 0
    writes: deque[asyncio.Future[None]] = deque()
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            pending_len += len(chunk)
            if pending_len >= block:
                while len(writes) >= WRITES_IN_FLIGHT:
                    await writes.popleft()
                data = b"".join(pending)
                writes.append(asyncio.ensure_future(out.call(_write_block, data, start + size)))
                size += pending_len
                pending, pending_len = [], 0
        while writes:
            await writes.popleft()
        if pending:
            await out.call(_write_block, b"".join(pending), start + size)
            size += pending_len
    finally:
        for write in writes:
            # Only after a failure: the caller discards the file next (ThreadFile.close waits
            # for the threads), and a write's own error, if any, is not the one to raise.
            keep(write, "a block write", expected=(OSError,))
    return size


def _write_block(fd: int, data: bytes, offset: int) -> None:
    pwrite_all(fd, data, offset)
    start_writeback(fd, offset, len(data))


def _temp_prefix(final: Path) -> str:
    return f".{final.name}."


def _make_temp(final: Path) -> tuple[int, str]:
    _make_fanout_dir(final.parent)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=TEMP_SUFFIX, dir=final.parent)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        _close_and_unlink((fd, name))
        raise
    return fd, name


def _close_and_unlink(temp: tuple[int, str]) -> None:
    os.close(temp[0])
    _unlink_quietly(Path(temp[1]))


def _stage_copy(source: Path, final: Path) -> tuple[Path, int]:
    """A durable copy of `source` under a temp name beside `final`.

    A hard link costs nothing and leaves the source in place; a copy (kernel-side, via
    copy_file_range/sendfile) is the fallback across file systems or where links are refused.
    """
    _make_fanout_dir(final.parent)
    staged = final.parent / f"{_temp_prefix(final)}{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        try:
            os.link(source, staged)
        except FileNotFoundError:
            raise
        except OSError:  # EXDEV, EPERM, EMLINK, ENOTSUP...
            shutil.copyfile(source, staged)
            os.chmod(staged, FILE_MODE)
        fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    except BaseException:
        _unlink_quietly(staged)
        raise
    return staged, size


def _make_fanout_dir(directory: Path) -> None:
    """The blob's directory (`root/ab/`), made durably: a directory just created is on disk only
    once its parent is fsynced too, and the blobs committed into it must outlive a crash."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    _fsync_dir(directory.parent)


def _commit(temp: Path, final: Path) -> None:
    os.replace(temp, final)
    # The rename is durable only once the directory entry is on disk too.
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _probe_writable(root: Path) -> None:
    # Creating a file is the only honest test: os.access ignores read-only mounts and full disks.
    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".probe.", suffix=TEMP_SUFFIX, dir=root)
    _close_and_unlink((fd, name))


def _list_committed(root: Path, before: float) -> list[str]:
    if not root.is_dir():
        return []
    return [
        p.name
        for p in root.glob("*/*")
        if not p.name.startswith(".") and p.is_file() and p.stat().st_mtime < before
    ]


def _remove_stale_temps(root: Path, before: float) -> int:
    """Temp files of writes that a crash interrupted (kill -9 skips every cleanup)."""
    if not root.is_dir():
        return 0
    removed = 0
    for p in root.glob(f"*/.*{TEMP_SUFFIX}"):
        if p.stat().st_mtime < before:
            _unlink_quietly(p)
            removed += 1
    return removed


def _partial_name(blob_id: str, length: int) -> str:
    return f".{blob_id}.{length}{PARTIAL_SUFFIX}"


def _find_partial(final: Path) -> tuple[Path, int] | None:
    prefix = _temp_prefix(final)
    try:
        entries = os.scandir(final.parent)
    except FileNotFoundError:
        return None
    with entries:
        for entry in entries:
            name = entry.name
            if name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX):
                length = name[len(prefix) : -len(PARTIAL_SUFFIX)]
                if length.isdigit():
                    return Path(entry.path), int(length)
    return None


def _create_partial(final: Path) -> None:
    _make_fanout_dir(final.parent)
    if _find_partial(final) is not None:
        return
    path = final.parent / _partial_name(final.name, 0)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    _fsync_dir(final.parent)


def _commit_partial(final: Path) -> int:
    found = _find_partial(final)
    if found is None:
        try:
            return os.stat(final).st_size  # committed by an earlier call
        except FileNotFoundError:
            raise BlobNotFound(final.name) from None
    path, length = found
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size != length:
            os.ftruncate(fd, length)
            os.fsync(fd)
    finally:
        os.close(fd)
    _commit(path, final)
    return length
