"""The same behaviour from both backends, against real storage (a directory, a MongoDB server)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest

from shared.blobstore import BlobNotFound, BlobStore, InvalidBlobId
from shared.blobstore.base import MIB
from tests.blobstore.conftest import Backend

CHUNK = MIB  # the GridFS chunk size; boundaries around it are where range maths goes wrong


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


async def pieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    """`data` in uneven pieces, as an HTTP body would arrive."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def read_all(store: BlobStore, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([b async for b in store.read(blob_id, start, end)])


@pytest.mark.parametrize("n", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * MIB + 3])
async def test_round_trip(store: BlobStore, n: int) -> None:
    data = random_bytes(n, seed=n)
    assert await store.write("blob1", pieces(data)) == n
    assert await store.size("blob1") == n
    assert await read_all(store, "blob1") == data


async def test_round_trip_of_one_large_piece(store: BlobStore) -> None:
    data = random_bytes(3 * CHUNK + 5)

    async def one_piece() -> AsyncIterator[bytes]:
        yield data

    assert await store.write("big-piece", one_piece()) == len(data)
    assert await read_all(store, "big-piece") == data


async def test_reads_come_in_bounded_blocks(store: BlobStore) -> None:
    await store.write("blocks", pieces(random_bytes(3 * CHUNK)))
    assert max([len(b) async for b in store.read("blocks")]) <= MIB


RANGE_SIZE = 3 * CHUNK + 17


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (5, None),  # start only
        (10, 20),
        (0, 0),  # first byte
        (RANGE_SIZE - 1, None),  # last byte, open end
        (RANGE_SIZE - 1, RANGE_SIZE - 1),  # last byte, explicit
        (CHUNK - 3, CHUNK + 2),  # across one chunk boundary
        (CHUNK - 1, CHUNK),  # exactly the two bytes around it
        (CHUNK, 2 * CHUNK - 1),  # exactly one whole chunk
        (CHUNK - 1, 3 * CHUNK + 1),  # across several, into the short last chunk
        (0, RANGE_SIZE - 1),  # whole
        (0, None),
        (100, RANGE_SIZE + 1000),  # end past the last byte is clipped
    ],
)
async def test_ranges(store: BlobStore, start: int, end: int | None) -> None:
    data = random_bytes(RANGE_SIZE, seed=7)
    await store.write("ranged", pieces(data, 300_000))
    stop = None if end is None else end + 1
    assert await read_all(store, "ranged", start, end) == data[start:stop]


async def test_start_past_the_end_yields_nothing(store: BlobStore) -> None:
    await store.write("short", pieces(b"abc"))
    assert await read_all(store, "short", 3) == b""
    assert await read_all(store, "short", 1000, 2000) == b""


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4)])
async def test_bad_ranges_raise(store: BlobStore, start: int, end: int | None) -> None:
    await store.write("short", pieces(b"abcdefgh"))
    with pytest.raises(ValueError, match="range"):
        await read_all(store, "short", start, end)


async def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.size("nope")
    with pytest.raises(BlobNotFound):
        await read_all(store, "nope")
    with pytest.raises(BlobNotFound):
        await read_all(store, "nope", 5, 10)


async def test_delete(store: BlobStore) -> None:
    await store.write("doomed", pieces(random_bytes(CHUNK + 10)))
    await store.delete("doomed")
    with pytest.raises(BlobNotFound):
        await store.size("doomed")
    with pytest.raises(BlobNotFound):
        await read_all(store, "doomed")
    await store.delete("doomed")  # deleting a missing blob is fine
    await store.delete("never-was")


async def test_delete_leaves_other_blobs(backend: Backend) -> None:
    store = backend.store
    await store.write("keep", pieces(b"kept"))
    await store.write("drop", pieces(random_bytes(CHUNK + 1)))
    await store.delete("drop")
    assert await read_all(store, "keep") == b"kept"


async def test_rewrite_replaces(backend: Backend) -> None:
    store = backend.store
    await store.write("again", pieces(random_bytes(2 * CHUNK + 1, seed=1)))
    second = random_bytes(CHUNK // 2, seed=2)
    await store.write("again", pieces(second))
    assert await store.size("again") == len(second)
    assert await read_all(store, "again") == second
    await store.delete("again")
    assert await backend.remaining(set()) == set()


async def test_failed_write_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    traces: set[object] = set()

    # 10 MiB: GridFS has certainly inserted its first batches by then (each insert is awaited
    # before the next one starts), so the traces below are never empty.
    async def breaks_halfway() -> AsyncIterator[bytes]:
        async for piece in pieces(random_bytes(10 * MIB)):
            yield piece
        traces.update(await backend.partial_traces())
        raise RuntimeError("upload broke")

    with pytest.raises(RuntimeError, match="upload broke"):
        await store.write("broken", breaks_halfway())
    assert traces, "the write should have stored partial data before the failure"
    assert await backend.remaining(traces) == set()
    with pytest.raises(BlobNotFound):
        await store.size("broken")


async def test_cancelled_write_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for piece in pieces(random_bytes(10 * MIB)):
            yield piece
        started.set()
        await asyncio.Event().wait()  # a client that stops sending
        yield b"never"

    task = asyncio.create_task(store.write("cancelled", stalls()))
    await asyncio.wait_for(started.wait(), 30)
    traces = await backend.partial_traces()
    assert traces
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.remaining(traces) == set()
    with pytest.raises(BlobNotFound):
        await store.size("cancelled")


async def test_failed_write_keeps_the_previous_version(store: BlobStore) -> None:
    await store.write("stable", pieces(b"old bytes"))

    async def fails() -> AsyncIterator[bytes]:
        yield random_bytes(2 * CHUNK)
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        await store.write("stable", fails())
    assert await read_all(store, "stable") == b"old bytes"


async def test_write_file(store: BlobStore, tmp_path: Path) -> None:
    data = random_bytes(2 * CHUNK + 99, seed=3)
    source = tmp_path / "out.mp3"
    source.write_bytes(data)
    assert await store.write_file("from-file", source) == len(data)
    assert source.read_bytes() == data  # left in place
    assert await read_all(store, "from-file") == data
    source.unlink()  # the blob does not depend on the source staying
    assert await read_all(store, "from-file", CHUNK, CHUNK + 9) == data[CHUNK : CHUNK + 10]


async def test_write_file_of_an_empty_file(store: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.touch()
    assert await store.write_file("empty", source) == 0
    assert await read_all(store, "empty") == b""


async def test_write_file_missing_source(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await backend.store.write_file("x", tmp_path / "absent")
    assert await backend.remaining(set()) == set()


BAD_IDS = ["", "../etc", "a/b", ".hidden", "a b", "x" * 129, "é", "a\x00b", "..", "/abs"]


@pytest.mark.parametrize("blob_id", BAD_IDS)
async def test_bad_blob_ids_are_rejected(store: BlobStore, blob_id: str, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(InvalidBlobId):
        await store.write(blob_id, pieces(b"x"))
    with pytest.raises(InvalidBlobId):
        await store.write_file(blob_id, source)
    with pytest.raises(InvalidBlobId):
        await store.size(blob_id)
    with pytest.raises(InvalidBlobId):
        await read_all(store, blob_id)
    with pytest.raises(InvalidBlobId):
        await store.delete(blob_id)
    with pytest.raises(InvalidBlobId):
        store.local_path(blob_id)
    assert issubclass(InvalidBlobId, ValueError)


async def test_good_blob_ids(store: BlobStore) -> None:
    for blob_id in ["a", "A-z_0", "6f1c2b-44_aa", "x" * 128]:
        await store.write(blob_id, pieces(blob_id.encode()))
        assert await read_all(store, blob_id) == blob_id.encode()


async def test_stopping_a_read_early(store: BlobStore) -> None:
    await store.write("partial", pieces(random_bytes(20 * CHUNK)))
    reader = store.read("partial")
    first = await anext(reader)
    assert first
    # Both backends return async generators (the Protocol says AsyncIterator).
    assert isinstance(reader, AsyncGenerator)
    await reader.aclose()
    assert await store.size("partial") == 20 * CHUNK  # and the store still works


async def test_concurrent_writes_and_reads(store: BlobStore) -> None:
    blobs = {f"c{i}": random_bytes(CHUNK + i * 1000, seed=i) for i in range(4)}
    await asyncio.gather(*(store.write(k, pieces(v)) for k, v in blobs.items()))
    got = await asyncio.gather(*(read_all(store, k) for k in blobs))
    assert got == list(blobs.values())


async def test_local_path(backend: Backend) -> None:
    await backend.store.write("local", pieces(b"on disk"))
    path = backend.store.local_path("local")
    if backend.name == "file":
        assert path is not None
        assert path.read_bytes() == b"on disk"
    else:
        assert path is None


async def test_check(store: BlobStore) -> None:
    await store.check()
