"""BlobFile: a blob read synchronously from a worker thread, as PyAV reads it."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator

import av

from shared.blobstore import BlobFile, BlobStore
from tests.support.media import MediaFactory

BLOCK = 1000  # small blocks, so every read below crosses several


async def open_blob(store: BlobStore, data: bytes) -> BlobFile:
    await store.write("b1", _chunks(data))
    return BlobFile(
        store, "b1", await store.size("b1"), asyncio.get_running_loop(),
        block_size=BLOCK, cached_blocks=2,
    )  # fmt: skip


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


async def test_reads_and_seeks_like_a_file(store: BlobStore) -> None:
    data = os.urandom(10_500)
    blob = await open_blob(store, data)
    local = io.BytesIO(data)

    def same_steps() -> None:
        for offset, whence, size in [
            (0, io.SEEK_SET, 10), (995, io.SEEK_SET, 2010), (-7, io.SEEK_END, 100),
            (-3000, io.SEEK_CUR, 1), (0, io.SEEK_SET, -1), (20_000, io.SEEK_SET, 5),
            (123, io.SEEK_SET, 0),
        ]:  # fmt: skip
            assert blob.seek(offset, whence) == local.seek(offset, whence)
            assert blob.read(size) == local.read(size)
            assert blob.tell() == local.tell()

    await asyncio.to_thread(same_steps)


async def test_keeps_only_a_few_blocks_and_refetches_on_demand(store: BlobStore) -> None:
    data = os.urandom(5 * BLOCK)
    blob = await open_blob(store, data)

    def read_twice() -> None:
        assert blob.read() == data
        assert blob.fetched_bytes == len(data)
        blob.seek(0)
        assert blob.read(BLOCK) == data[:BLOCK]  # evicted: fetched again
        assert blob.fetched_bytes == len(data) + BLOCK
        blob.seek(len(data) - 1)
        assert blob.read(1) == data[-1:]  # still cached
        assert blob.fetched_bytes == len(data) + BLOCK

    await asyncio.to_thread(read_twice)


async def test_pyav_opens_a_blob_and_reads_only_what_it_needs(
    store: BlobStore, media: MediaFactory
) -> None:
    path = media.h264_aac(30)
    await store.write_file("video", path)
    size = await store.size("video")
    blob = BlobFile(store, "video", size, asyncio.get_running_loop(), block_size=64 * 1024)

    def describe() -> tuple[float, int]:
        with av.open(blob, "r") as container:
            return float(container.duration or 0) / av.time_base, len(container.streams.audio)

    duration, tracks = await asyncio.to_thread(describe)
    assert abs(duration - 30) < 0.1
    assert tracks == 1
    assert blob.fetched_bytes < size
