"""Blobs in MongoDB GridFS, in the standard `fs.files`/`fs.chunks` layout.

Each write is one GridFS file revision with a fresh ObjectId `_id`; the blob id is its
`filename`, so `mongofiles get <blob id>` and any driver's `open_download_stream_by_name`
read blobs as they are. The newest revision (by `uploadDate`, then `_id`) is the blob.

Why chunks are written and read here rather than through AsyncGridFSBucket:
- reads must fetch bounded ranges of `n` per query. Some servers (the nx-27017 test server)
  answer a whole cursor in one reply whatever the batch size and fail past ~48 MB, and a
  byte Range maps directly onto a range of `n`;
- a write has to remove its chunks on any failure, cancellation included, and its files
  document (the commit) has to come last, so that readers never see a partial blob.

Every call goes through the client's timeouts (`shared.mongo.mongo_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from bson import Int64, ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from shared.aio import keep, shielded
from shared.blobstore._aio import iter_file
from shared.blobstore.base import (
    MIB,
    BlobNotFound,
    PartialOffsetMismatch,
    byte_span,
    validate_blob_id,
)

log = logging.getLogger(__name__)

# Measured on nx-27017 (64 and 120 MiB blobs): 1 MiB chunks inserted 4 at a time wrote fastest
# (8 or 16 per insert, or 4 MiB chunks, were slower; 255 KiB chunks were no faster); reads ran
# at the same speed with 4 or 8 MiB per query. A write holds one batch in flight plus the next,
# and a read one range plus the prefetched one, so these also bound memory per transfer (~8 MiB),
# which matters with many concurrent downloads. 1 MiB is far below the 16 MiB document limit.
CHUNK_SIZE = MIB
WRITE_BATCH_BYTES = 4 * MIB
READ_BATCH_BYTES = 4 * MIB

NEWEST_FIRST = [("uploadDate", DESCENDING), ("_id", DESCENDING)]

Doc = dict[str, Any]


class GridFSBlobStore:
    def __init__(
        self,
        db: AsyncDatabase[Any],
        *,
        bucket: str = "fs",
        chunk_size: int = CHUNK_SIZE,
        write_batch_bytes: int = WRITE_BATCH_BYTES,
        read_batch_bytes: int = READ_BATCH_BYTES,
    ) -> None:
        self.db = db
        self.files: AsyncCollection[Doc] = db.get_collection(f"{bucket}.files")
        self.chunks: AsyncCollection[Doc] = db.get_collection(f"{bucket}.chunks")
        self.partials: AsyncCollection[Doc] = db.get_collection(f"{bucket}_partials")
        self.chunk_size = chunk_size
        self.chunks_per_insert = max(1, write_batch_bytes // chunk_size)
        self.read_batch_bytes = read_batch_bytes
        self._indexes_ready = False
        self._index_lock = asyncio.Lock()

    async def write(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        validate_blob_id(blob_id)
        await self._ensure_indexes()
        upload = _Upload(self, ObjectId())
        try:
            length = await upload.stream(chunks)
            await shielded(
                self._commit(blob_id, upload.files_id, length), "committing a blob", wait=True
            )
        except BaseException:
            await shielded(upload.abort(), "discarding an unfinished blob", wait=True)
            raise
        await self._drop_older_revisions(blob_id, upload.files_id)
        return length

    async def write_file(self, blob_id: str, path: Path) -> int:
        return await self.write(blob_id, iter_file(path, self.chunk_size))

    async def read(
        self, blob_id: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        validate_blob_id(blob_id)
        byte_span(start, end, 0)  # argument errors before any I/O
        doc = await self._newest(blob_id)
        length, chunk_size = int(doc["length"]), int(doc["chunkSize"])
        lo, hi = byte_span(start, end, length)
        if lo >= hi:
            return
        # Chunk size comes from the files document: revisions written by other tools (255 KiB
        # is the drivers' default) read correctly too.
        per_query = max(1, self.read_batch_bytes // chunk_size)
        first, last = lo // chunk_size, (hi - 1) // chunk_size
        # The first chunk comes alone: FFmpeg reading a piped source, or a download's first
        # byte, waits for it (4 MiB took 12-20 ms on nx-27017, 1 MiB 3 ms). The rest come
        # `per_query` at a time, one query ahead of the caller.
        ranges = [(first, first + 1)] + [
            (a, min(a + per_query, last + 1)) for a in range(first + 1, last + 1, per_query)
        ]

        # One query ahead: the next range is on its way while the caller consumes this one.
        ahead = asyncio.ensure_future(self._fetch(doc["_id"], *ranges[0]))
        try:
            for i, (a, b) in enumerate(ranges):
                docs = await ahead
                if i + 1 < len(ranges):
                    ahead = asyncio.ensure_future(self._fetch(doc["_id"], *ranges[i + 1]))
                for n, chunk in enumerate(docs, start=a):
                    data = _checked_data(chunk, n, length, chunk_size, blob_id)
                    offset = n * chunk_size
                    cut_lo, cut_hi = max(lo - offset, 0), min(hi - offset, len(data))
                    yield data if (cut_lo, cut_hi) == (0, len(data)) else data[cut_lo:cut_hi]
                if len(docs) != b - a:
                    raise _vanished(blob_id)
        finally:
            _abandon(ahead)

    async def size(self, blob_id: str) -> int:
        validate_blob_id(blob_id)
        return int((await self._newest(blob_id))["length"])

    async def delete(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        for files_id in await self._revisions(blob_id):
            await self._delete_revision(files_id)

    def local_path(self, blob_id: str) -> Path | None:
        validate_blob_id(blob_id)
        return None

    async def list_blobs(self, older_than: datetime.datetime) -> AsyncIterator[str]:
        cursor = self.files.find(
            {"uploadDate": {"$lt": older_than}, "filename": {"$ne": ""}},
            projection={"filename": 1},
        )
        async for doc in cursor:
            if doc.get("filename"):
                yield str(doc["filename"])

    async def remove_leftovers(self, older_than: datetime.datetime) -> int:
        """Chunks of writes that never committed: placeholder files documents (nx-27017 makes
        one per upload) and chunks whose files document does not exist (real MongoDB)."""
        removed = 0
        # Partial blobs are their owner's to expire (nx-27017 gives them placeholders too).
        partial = {ObjectId(d["files_id"]) async for d in self.partials.find({}, {"files_id": 1})}
        async for doc in self.files.find({"filename": ""}, projection={"_id": 1, "uploadDate": 1}):
            uploaded = doc.get("uploadDate")
            if doc["_id"] in partial:
                continue
            if uploaded is None or _as_utc(uploaded) < older_than:
                await shielded(
                    self._delete_revision(doc["_id"]), "deleting a blob revision", wait=True
                )
                removed += 1
        owners = set(await self.chunks.distinct("files_id"))
        if owners:
            known = {d["_id"] async for d in self.files.find({"_id": {"$in": list(owners)}})}
            for files_id in owners - known - partial:
                # An ObjectId carries its creation time: a write still in progress is young.
                if isinstance(files_id, ObjectId) and files_id.generation_time < older_than:
                    await self.chunks.delete_many({"files_id": files_id})
                    removed += 1
        return removed

    async def check(self) -> None:
        await self.db.command("ping")

    # A partial blob is a document in `<bucket>_partials` ({_id: blob id, files_id as hex
    # (the test server matches no ObjectId field in a filter), length, tail}) and the whole
    # chunks of its bytes under `files_id`; the bytes after the last whole chunk (the tail)
    # live in that document until the next append or the commit. Chunks are only ever
    # inserted, never rewritten (the test server cannot update or delete a single chunk), and
    # the document is updated after its chunks have landed, so it always names stored bytes.
    # Chunks past it (from an append that failed or crashed) are found before the next insert,
    # and the partial then moves to a fresh `files_id` without them: rare, and right on any
    # server.

    async def create_partial(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        await self._ensure_indexes()
        with contextlib.suppress(DuplicateKeyError):
            await self.partials.insert_one(
                {"_id": blob_id, "files_id": str(ObjectId()), "length": Int64(0), "tail": b""}
            )

    async def partial_length(self, blob_id: str) -> int:
        return int((await self._partial(blob_id))["length"])

    async def partial_head(self, blob_id: str, n: int) -> bytes:
        state = await self._partial(blob_id)
        length = min(n, int(state["length"]))
        whole = int(state["length"]) // self.chunk_size
        needed = min(whole, -(-length // self.chunk_size))
        docs = await self._fetch(ObjectId(state["files_id"]), 0, needed) if needed else []
        data = b"".join(bytes(d["data"]) for d in docs)
        if len(data) < length:
            data += bytes(state["tail"])
        return data[:length]

    async def append_partial(self, blob_id: str, offset: int, chunks: AsyncIterable[bytes]) -> int:
        state = await self._partial(blob_id)
        length = int(state["length"])
        if length != offset:
            raise PartialOffsetMismatch(blob_id, length)
        files_id = await self._without_strays(state)
        upload = _Upload(self, files_id)
        upload.next_n = length // self.chunk_size
        try:
            added, tail = await upload.stream_whole_chunks(chunks, bytes(state["tail"]))
            await upload.finish()
        except BaseException:
            # Chunks already inserted stay as strays past the length: the next append or the
            # commit moves the partial away from them.
            await shielded(upload.settle_quietly(), "settling a partial blob's writes", wait=True)
            raise
        if added:
            await self._advance(blob_id, files_id, length, length + added, tail)
        return length + added

    async def commit_partial(self, blob_id: str) -> int:
        validate_blob_id(blob_id)
        state = await self.partials.find_one({"_id": blob_id})
        if state is None:
            return await self.size(blob_id)  # committed by an earlier call
        files_id, length = ObjectId(state["files_id"]), int(state["length"])
        committed = await self.files.find_one(
            {"_id": files_id, "filename": blob_id}, projection={"_id": 1}
        )
        if committed is None:
            files_id = await self._without_strays(state)
            tail = bytes(state["tail"])
            if tail:
                await self.chunks.insert_one(
                    {"files_id": files_id, "n": length // self.chunk_size, "data": tail}
                )
            await shielded(self._commit(blob_id, files_id, length), "committing a blob", wait=True)
        await self.partials.delete_one({"_id": blob_id})
        await self._drop_older_revisions(blob_id, files_id)
        return length

    async def delete_partial(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        state = await self.partials.find_one({"_id": blob_id})
        if state is None:
            return
        # The document first: chunks whose partial is gone are leftovers, and swept as such.
        await self.partials.delete_one({"_id": blob_id})
        files_id = ObjectId(state["files_id"])
        if await self.files.find_one({"_id": files_id, "filename": blob_id}) is None:
            await self._delete_revision(files_id)

    async def _partial(self, blob_id: str) -> Doc:
        validate_blob_id(blob_id)
        state = await self.partials.find_one({"_id": blob_id})
        if state is None:
            raise BlobNotFound(blob_id)
        return state

    async def _advance(
        self, blob_id: str, files_id: ObjectId, old: int, new: int, tail: bytes
    ) -> None:
        done = await self.partials.update_one(
            {"_id": blob_id, "files_id": str(files_id), "length": Int64(old)},
            {"$set": {"length": Int64(new), "tail": tail}},
        )
        if done.matched_count != 1:
            raise PartialOffsetMismatch(blob_id, await self.partial_length(blob_id))

    async def _without_strays(self, state: Doc) -> ObjectId:
        """The partial's `files_id`, after moving its chunks to a fresh one if chunks past its
        length are in the way."""
        files_id = ObjectId(state["files_id"])
        length = int(state["length"])
        whole = length // self.chunk_size
        stray = await self.chunks.find_one(
            {"files_id": files_id, "n": {"$gte": whole}}, projection={"n": 1}
        )
        if stray is None:
            return files_id
        log.warning("partial blob %s: moving %d chunks away from strays", state["_id"], whole)
        fresh = ObjectId()
        upload = _Upload(self, fresh)
        per_query = max(1, self.read_batch_bytes // self.chunk_size)
        try:
            for a in range(0, whole, per_query):
                b = min(a + per_query, whole)
                docs = await self._fetch(files_id, a, b)
                if len(docs) != b - a:
                    raise BlobNotFound(f"{state['_id']} lost chunks")
                for n, doc in enumerate(docs, start=a):
                    await upload._add(_checked_data(doc, n, length, self.chunk_size, state["_id"]))
            await upload.finish()
        except BaseException:
            await shielded(upload.abort(), "discarding an unfinished blob", wait=True)
            raise
        moved = await self.partials.update_one(
            {"_id": state["_id"], "files_id": str(files_id), "length": state["length"]},
            {"$set": {"files_id": str(fresh)}},
        )
        if moved.matched_count != 1:
            await shielded(upload.abort(), "discarding an unfinished blob", wait=True)
            raise PartialOffsetMismatch(state["_id"], await self.partial_length(state["_id"]))
        await self._delete_revision(files_id)
        return fresh

    async def _ensure_indexes(self) -> None:
        # The GridFS spec's two indexes. create_index is a no-op when the index exists, so this
        # runs once per store object, not per write. (nx-27017 rejects compound indexes that
        # include `_id`; neither of these does.)
        if self._indexes_ready:
            return
        async with self._index_lock:
            if self._indexes_ready:
                return
            await self.files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
            await self.chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
            self._indexes_ready = True

    async def _commit(self, blob_id: str, files_id: ObjectId, length: int) -> None:
        await self.files.insert_one(
            {
                "_id": files_id,
                "length": Int64(length),
                "chunkSize": self.chunk_size,
                "uploadDate": datetime.datetime.now(datetime.UTC),
                "filename": blob_id,
            }
        )

    async def _drop_older_revisions(self, blob_id: str, keep: ObjectId) -> None:
        # The write is committed: a failure here must not make it look failed. Older revisions
        # are invisible to readers and go with the next delete().
        try:
            for files_id in await self._revisions(blob_id):
                if files_id != keep:
                    await shielded(
                        self._delete_revision(files_id), "deleting a blob revision", wait=True
                    )
        except Exception as exc:
            log.warning("could not remove older revisions of blob %s: %r", blob_id, exc)

    async def _newest(self, blob_id: str) -> Doc:
        doc = await self.files.find_one({"filename": blob_id}, sort=NEWEST_FIRST)
        if doc is None:
            raise BlobNotFound(blob_id)
        return doc

    async def _revisions(self, blob_id: str) -> list[ObjectId]:
        cursor = self.files.find({"filename": blob_id}, projection={"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def _fetch(self, files_id: ObjectId, a: int, b: int) -> list[Doc]:
        cursor = self.chunks.find(
            {"files_id": files_id, "n": {"$gte": a, "$lt": b}},
            projection={"_id": 0, "n": 1, "data": 1},
            sort=[("n", ASCENDING)],
        )
        return await cursor.to_list()

    async def _delete_revision(self, files_id: ObjectId) -> None:
        """The files document first, so readers stop seeing the blob, then its chunks."""
        try:
            await self.files.delete_one({"_id": files_id})
        except OperationFailure:
            # nx-27017 answers "File with id ... not found" where MongoDB reports 0 deleted;
            # only an error that leaves the document in place is a real failure.
            if await self.files.find_one({"_id": files_id}, projection={"_id": 1}) is not None:
                raise
        await self.chunks.delete_many({"files_id": files_id})


class _Upload:
    """The chunks of one write in progress: fixed-size, inserted a batch at a time.

    One insert runs while the next batch is gathered from the source, so a slow source (an
    HTTP upload) and the database work in parallel.
    """

    def __init__(self, store: GridFSBlobStore, files_id: ObjectId) -> None:
        self.store = store
        self.files_id = files_id
        self.next_n = 0
        self.batch: list[Doc] = []
        self.in_flight: asyncio.Future[Any] | None = None

    async def stream(self, chunks: AsyncIterable[bytes]) -> int:
        length, rest = await self.stream_whole_chunks(chunks)
        if rest:
            await self._add(rest)
        await self.finish()
        return length

    async def stream_whole_chunks(
        self, chunks: AsyncIterable[bytes], head: bytes = b""
    ) -> tuple[int, bytes]:
        """Insert `head` and then the stream as whole chunks; returns the stream's length and
        the remainder too short for a chunk, which is not inserted."""
        size = self.store.chunk_size
        length = 0
        parts: list[bytes] = [head] if head else []
        parts_len = len(head)
        async for piece in chunks:
            if not piece:
                continue
            length += len(piece)
            parts.append(piece)
            parts_len += len(piece)
            if parts_len >= size:
                data = b"".join(parts)
                whole = len(data) - len(data) % size
                for offset in range(0, whole, size):
                    await self._add(data[offset : offset + size])
                rest = data[whole:]
                parts, parts_len = ([rest], len(rest)) if rest else ([], 0)
        return length, b"".join(parts)

    async def finish(self) -> None:
        """Insert what is batched and wait until every insert has landed."""
        await self._flush()
        await self._settle()

    async def _add(self, data: bytes) -> None:
        self.batch.append({"files_id": self.files_id, "n": self.next_n, "data": data})
        self.next_n += 1
        if len(self.batch) >= self.store.chunks_per_insert:
            await self._flush()

    async def _flush(self) -> None:
        await self._settle()
        if self.batch:
            batch, self.batch = self.batch, []
            self.in_flight = asyncio.ensure_future(self.store.chunks.insert_many(batch))

    async def _settle(self) -> None:
        if self.in_flight is not None:
            # Shielded: cancelling the write must not cut an insert off mid-request, or it
            # could still land after abort() has deleted the chunks (an orphan).
            await asyncio.shield(self.in_flight)
            self.in_flight = None

    async def settle_quietly(self) -> None:
        """Wait for the insert in flight, ignoring its outcome (the caller raises its own)."""
        if self.in_flight is not None:
            await asyncio.wait([self.in_flight])
            if not self.in_flight.cancelled():
                self.in_flight.exception()
            self.in_flight = None

    async def abort(self) -> None:
        if self.in_flight is not None:
            await asyncio.wait([self.in_flight])
            if not self.in_flight.cancelled():
                self.in_flight.exception()  # retrieved: the write's own error is what we raise
        # Also when no chunk was written: a commit that failed with a timeout may still have
        # inserted the files document. On MongoDB there is usually no files document yet and
        # this deletes the chunks; nx-27017 creates a placeholder files row (filename "") with
        # the first chunk, which this removes together with the chunks.
        await self.store._delete_revision(self.files_id)


def _abandon(fut: asyncio.Future[Any]) -> None:
    """Cancel a prefetch nobody will await; its failure, if it had one, is of no interest."""
    fut.cancel()
    keep(fut, "a prefetch", expected=(Exception,))


def _checked_data(chunk: Mapping[str, Any], n: int, length: int, size: int, blob_id: str) -> bytes:
    # A chunk that is missing or of the wrong size means the revision was deleted or replaced
    # under the reader (or damaged): never return bytes that are not the blob's.
    expected = min(size, length - n * size)
    data = chunk.get("data")
    if chunk.get("n") != n or not isinstance(data, bytes) or len(data) != expected:
        raise _vanished(blob_id)
    return data


def _vanished(blob_id: str) -> BlobNotFound:
    return BlobNotFound(f"{blob_id} was deleted or replaced while being read")


def _as_utc(value: datetime.datetime) -> datetime.datetime:
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
