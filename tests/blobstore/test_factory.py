from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.blobstore import FileBlobStore, GridFSBlobStore, open_blob_store
from shared.settings import Settings


async def test_open_blob_store(
    settings_factory: Callable[..., Settings], mongo_db: AsyncDatabase[Any]
) -> None:
    file_settings = settings_factory(blob_store="file")
    store = open_blob_store(file_settings, mongo_db)
    assert isinstance(store, FileBlobStore)
    assert store.root == file_settings.resolved_blob_dir
    assert isinstance(
        open_blob_store(settings_factory(blob_store="gridfs"), mongo_db), GridFSBlobStore
    )
