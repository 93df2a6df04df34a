"""Where video and audio bytes live: a directory (`BLOB_STORE=file`) or MongoDB GridFS."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.blobstore.base import (
    BlobNotFound,
    BlobStore,
    InvalidBlobId,
    PartialOffsetMismatch,
    validate_blob_id,
)
from shared.blobstore.file import FileBlobStore
from shared.blobstore.filelike import BlobFile
from shared.blobstore.gridfs import GridFSBlobStore
from shared.settings import Settings

__all__ = [
    "BlobFile",
    "BlobNotFound",
    "BlobStore",
    "FileBlobStore",
    "GridFSBlobStore",
    "InvalidBlobId",
    "PartialOffsetMismatch",
    "open_blob_store",
    "validate_blob_id",
]


def open_blob_store(settings: Settings, db: AsyncDatabase[Any]) -> BlobStore:
    """The backend `settings.blob_store` names; `db` is used only by GridFS."""
    if settings.blob_store == "gridfs":
        return GridFSBlobStore(db)
    if settings.blob_store == "file":
        return FileBlobStore(settings.resolved_blob_dir)
    raise ValueError(f"unknown blob store {settings.blob_store!r}")
