"""GridFS specifics: the standard layout other tools read, bounded chunk queries, revisions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from shared.blobstore import BlobNotFound, GridFSBlobStore
from shared.blobstore.base import MIB
from tests.blobstore.test_blobstore import pieces, random_bytes, read_all


@pytest.fixture
def gridfs_store(mongo_db: AsyncDatabase[Any]) -> GridFSBlobStore:
    return GridFSBlobStore(mongo_db)


async def test_layout_is_standard_gridfs(
    gridfs_store: GridFSBlobStore, mongo_db: AsyncDatabase[Any]
) -> None:
    data = random_bytes(2 * MIB + 5)
    await gridfs_store.write("job-1", pieces(data))
    doc = await mongo_db["fs.files"].find_one({"filename": "job-1"})
    assert doc is not None
    assert doc["length"] == len(data)
    assert doc["chunkSize"] == MIB
    assert doc["uploadDate"]
    # The driver's own reader finds it by name and gets the same bytes.
    stream = await AsyncGridFSBucket(mongo_db).open_download_stream_by_name("job-1")
    assert await stream.read() == data


async def test_reads_files_written_by_the_driver(
    gridfs_store: GridFSBlobStore, mongo_db: AsyncDatabase[Any]
) -> None:
    data = random_bytes(3 * MIB + 1234, seed=5)
    # 255 KiB chunks (the drivers' default), not ours: read() must follow the files document.
    await AsyncGridFSBucket(mongo_db).upload_from_stream("by-driver", data)
    assert await gridfs_store.size("by-driver") == len(data)
    assert await read_all(gridfs_store, "by-driver") == data
    start, end = 255 * 1024 - 7, 2 * MIB + 11
    assert await read_all(gridfs_store, "by-driver", start, end) == data[start : end + 1]


async def test_rewrite_keeps_one_revision(
    gridfs_store: GridFSBlobStore, mongo_db: AsyncDatabase[Any]
) -> None:
    for seed in range(3):
        await gridfs_store.write("rev", pieces(random_bytes(MIB + seed, seed=seed)))
    docs = await mongo_db["fs.files"].find({"filename": "rev"}).to_list()
    assert [d["length"] for d in docs] == [MIB + 2]


async def test_a_blob_deleted_mid_read_raises(mongo_db: AsyncDatabase[Any]) -> None:
    # Tiny chunks and one chunk per query, so the read has to come back for more.
    store = GridFSBlobStore(mongo_db, chunk_size=1024, read_batch_bytes=1024)
    await store.write("vanishing", pieces(random_bytes(8 * 1024)))
    reader = store.read("vanishing")
    assert len(await anext(reader)) == 1024
    await store.delete("vanishing")
    with pytest.raises(BlobNotFound, match="while being read"):
        async for _ in reader:
            pass


async def test_small_chunks_and_batches(mongo_db: AsyncDatabase[Any]) -> None:
    store = GridFSBlobStore(
        mongo_db, chunk_size=1000, write_batch_bytes=3000, read_batch_bytes=2000
    )
    data = random_bytes(10_001)
    assert await store.write("small", pieces(data, 777)) == len(data)
    for start, end in [(0, None), (999, 1000), (1000, 1999), (4321, 9876), (10_000, None)]:
        stop = None if end is None else end + 1
        assert await read_all(store, "small", start, end) == data[start:stop]


async def test_missing_files_document_is_not_found(
    gridfs_store: GridFSBlobStore, mongo_db: AsyncDatabase[Any]
) -> None:
    async def empty() -> AsyncIterator[bytes]:
        return
        yield b""

    assert await gridfs_store.write("zero", empty()) == 0
    assert await gridfs_store.size("zero") == 0
    assert await read_all(gridfs_store, "zero") == b""
    await gridfs_store.delete("zero")
    assert await mongo_db["fs.files"].find_one({}) is None


async def test_check_fails_when_the_server_is_gone() -> None:
    from shared.mongo import mongo_client

    client = mongo_client("mongodb://127.0.0.1:9", timeout=0.5)
    try:
        with pytest.raises(Exception, match=r"."):
            await GridFSBlobStore(client["x"]).check()
    finally:
        await client.close()


class _ChunkQueries(monitoring.CommandListener):
    """The chunk ranges each `find` on fs.chunks asked for, as the driver sent them."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if event.command_name == "find" and command.get("find") == "fs.chunks":
            n = command["filter"]["n"]
            self.ranges.append((n["$gte"], n["$lt"]))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_the_first_chunk_is_fetched_alone(mongo_url: str) -> None:
    # A piped FFmpeg and a download's first byte wait for the first query; later ones run
    # ahead of the reader, a batch at a time.
    queries = _ChunkQueries()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, event_listeners=[queries], timeoutMS=30_000
    )
    try:
        db = client[f"blob_{uuid.uuid4().hex[:12]}"]
        store = GridFSBlobStore(db, chunk_size=1000, read_batch_bytes=3000)
        data = random_bytes(7_500)
        await store.write("batched", pieces(data))
        assert await read_all(store, "batched") == data
        assert queries.ranges == [(0, 1), (1, 4), (4, 7), (7, 8)]
        queries.ranges.clear()
        assert await read_all(store, "batched", 2500, 2600) == data[2500:2601]
        assert queries.ranges == [(2, 3)]
        await client.drop_database(db.name)
    finally:
        await client.close()
