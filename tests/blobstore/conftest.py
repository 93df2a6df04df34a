"""One store per backend, each on fresh storage: a temp directory, or a database of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from shared.blobstore import BlobStore, FileBlobStore, GridFSBlobStore
from shared.mongo import mongo_client


@dataclass
class Backend:
    """A store plus ways to look behind it for traces of an unfinished write."""

    name: str
    store: BlobStore
    root: Path | None = None
    db: AsyncDatabase[Any] | None = None

    async def partial_traces(self) -> set[Any]:
        """What an unfinished write has put down so far: temp files, or GridFS file ids."""
        if self.root is not None:
            return {p for p in self.root.rglob("*") if p.is_file()}
        assert self.db is not None
        ids = {d["files_id"] async for d in self.db["fs.chunks"].find({}, {"files_id": 1})}
        # nx-27017 creates a placeholder files row with the first chunk (and cannot list chunks
        # without a files_id); MongoDB has no files document before the commit.
        ids |= {d["_id"] async for d in self.db["fs.files"].find({}, {"_id": 1})}
        return {i for i in ids if await self.db["fs.chunks"].find_one({"files_id": i})}

    async def remaining(self, traces: set[Any]) -> set[Any]:
        """Which of `traces`, and what else of any blob, is still there."""
        if self.root is not None:
            return {p for p in self.root.rglob("*") if p.is_file()}
        assert self.db is not None
        left: set[Any] = set()
        for files_id in traces:
            if await self.db["fs.chunks"].find_one({"files_id": files_id}) is not None:
                left.add(("chunks", files_id))
            if await self.db["fs.files"].find_one({"_id": files_id}) is not None:
                left.add(("files", files_id))
        left |= {("files", d["_id"]) async for d in self.db["fs.files"].find({})}
        left |= {("chunks", d["files_id"]) async for d in self.db["fs.chunks"].find({})}
        return left


@pytest.fixture
async def mongo_db(mongo_url: str) -> AsyncIterator[AsyncDatabase[Any]]:
    client = mongo_client(mongo_url)
    name = f"blob_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture(params=["file", "gridfs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "file":
        root = tmp_path / "blobs"
        return Backend("file", FileBlobStore(root), root=root)
    # Requested only here, so file-backend tests need no MongoDB server.
    db: AsyncDatabase[Any] = request.getfixturevalue("mongo_db")
    return Backend("gridfs", GridFSBlobStore(db), db=db)


@pytest.fixture
def store(backend: Backend) -> BlobStore:
    return backend.store
