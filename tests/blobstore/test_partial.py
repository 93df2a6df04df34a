"""Partial blobs (resumable uploads) on both backends: appended over several calls, durable
at each return, invisible until committed, and whole after any failed append."""

from __future__ import annotations

import datetime
import itertools
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from shared.blobstore import BlobNotFound, BlobStore, PartialOffsetMismatch
from tests.blobstore.conftest import Backend
from tests.blobstore.test_blobstore import CHUNK, pieces, random_bytes, read_all

FUTURE = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)


class Dropped(Exception):
    """The connection went away mid-body."""


async def cut_after(data: bytes, n: int) -> AsyncIterator[bytes]:
    async for piece in pieces(data[:n]):
        yield piece
    raise Dropped


async def test_appends_make_one_blob_once_committed(store: BlobStore) -> None:
    data = random_bytes(3 * CHUNK + 11)
    cuts = [0, 5, CHUNK - 1, CHUNK + 2, 2 * CHUNK + 2, len(data)]
    await store.create_partial("up-src")
    for lo, hi in itertools.pairwise(cuts):
        assert await store.partial_length("up-src") == lo
        assert await store.partial_head("up-src", CHUNK + 1) == data[: min(lo, CHUNK + 1)]
        assert await store.append_partial("up-src", lo, pieces(data[lo:hi])) == hi
    with pytest.raises(BlobNotFound):
        await store.size("up-src")
    assert [b async for b in store.list_blobs(FUTURE)] == []
    assert await store.commit_partial("up-src") == len(data)
    assert await read_all(store, "up-src") == data
    # Committing again (a retried request) changes nothing.
    assert await store.commit_partial("up-src") == len(data)
    assert await read_all(store, "up-src") == data
    with pytest.raises(BlobNotFound):
        await store.partial_length("up-src")


async def test_an_append_at_the_wrong_offset_is_refused(store: BlobStore) -> None:
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(b"abc"))
    with pytest.raises(PartialOffsetMismatch) as caught:
        await store.append_partial("p", 1, pieces(b"zzz"))
    assert caught.value.length == 3
    assert await store.partial_length("p") == 3


@pytest.mark.parametrize("start", [100, CHUNK + 100])
@pytest.mark.parametrize("cut", [10, CHUNK + 10, 2 * CHUNK + 100])
async def test_a_failed_append_leaves_the_length_it_had(
    store: BlobStore, start: int, cut: int
) -> None:
    data = random_bytes(4 * CHUNK + 7, seed=cut)
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(data[:start]))
    with pytest.raises(Dropped):
        await store.append_partial("p", start, cut_after(data[start:], cut))
    assert await store.partial_length("p") == start
    # The client sends the rest again from the offset it is told; what the failed append wrote
    # past it (stray GridFS chunks, bytes past the file's named length) is not in the blob.
    tampered = bytearray(data)
    tampered[-1] ^= 0xFF
    tampered[start + 1] ^= 0xFF
    assert await store.append_partial("p", start, pieces(bytes(tampered[start:]))) == len(data)
    assert await store.commit_partial("p") == len(data)
    assert await read_all(store, "p") == bytes(tampered)


async def test_a_failed_last_append_is_not_committed(store: BlobStore) -> None:
    data = random_bytes(2 * CHUNK + 3)
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(data[:CHUNK]))
    with pytest.raises(Dropped):
        await store.append_partial("p", CHUNK, cut_after(data[CHUNK:], CHUNK + 1))
    assert await store.commit_partial("p") == CHUNK
    assert await read_all(store, "p") == data[:CHUNK]


async def test_deleting_a_partial_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(random_bytes(CHUNK + 5)))
    await store.delete_partial("p")
    await store.delete_partial("p")
    with pytest.raises(BlobNotFound):
        await store.partial_length("p")
    with pytest.raises(BlobNotFound):
        await store.commit_partial("p")
    assert await backend.remaining(set()) == set()


async def test_leftover_sweeps_spare_partials(backend: Backend) -> None:
    store = backend.store
    data = random_bytes(2 * CHUNK + 5)
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(data[: CHUNK + 1]))
    assert await store.remove_leftovers(FUTURE) == 0
    assert [b async for b in store.list_blobs(FUTURE)] == []
    await store.append_partial("p", CHUNK + 1, pieces(data[CHUNK + 1 :]))
    await store.commit_partial("p")
    assert await read_all(store, "p") == data


async def test_creating_twice_keeps_the_bytes(store: BlobStore) -> None:
    await store.create_partial("p")
    await store.append_partial("p", 0, pieces(b"hello"))
    await store.create_partial("p")
    assert await store.partial_length("p") == 5


async def test_missing_partials(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.partial_length("nope")
    with pytest.raises(BlobNotFound):
        await store.append_partial("nope", 0, pieces(b"x"))


async def test_memory_stays_flat_however_long_the_append(backend: Backend) -> None:
    store = backend.store
    total = 64 * CHUNK
    piece = random_bytes(64 * 1024)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(piece)):
            yield piece

    await store.create_partial("big")
    tracemalloc.start()
    try:
        assert await store.append_partial("big", 0, body()) == total
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A few blocks in flight (1 MiB each; GridFS a 4 MiB batch and its BSON), never the body.
    assert peak < 24 * CHUNK, f"{backend.name}: peak {peak / CHUNK:.1f} MiB"
    await store.delete_partial("big")
