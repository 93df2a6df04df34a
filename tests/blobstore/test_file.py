"""File backend specifics: layout on disk, durability steps, the readiness check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.blobstore import FileBlobStore
from tests.blobstore.test_blobstore import pieces, read_all


async def test_layout(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    await store.write("abcdef", pieces(b"bytes"))
    path = tmp_path / "blobs" / "ab" / "abcdef"
    assert store.local_path("abcdef") == path
    assert path.read_bytes() == b"bytes"
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*")) == ["ab", "abcdef"]


async def test_write_file_leaves_the_source(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    source = tmp_path / "out.mp3"
    source.write_bytes(b"mp3")
    await store.write_file("song", source)
    assert source.read_bytes() == b"mp3"
    # Replacing the source (as a converter re-run would) leaves the blob as it was.
    tmp = tmp_path / "new.mp3"
    tmp.write_bytes(b"other")
    os.replace(tmp, source)
    assert await read_all(store, "song") == b"mp3"


async def test_a_reader_keeps_its_version(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs", block_size=4)
    await store.write("v", pieces(b"0123456789"))
    reader = store.read("v")
    assert await anext(reader) == b"0123"
    await store.delete("v")
    assert b"".join([b async for b in reader]) == b"456789"


async def test_check_creates_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "new" / "blobs"
    await FileBlobStore(root).check()
    assert root.is_dir()
    assert list(root.iterdir()) == []


async def test_check_fails_on_an_unusable_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the platform
        await FileBlobStore(not_a_dir / "blobs").check()
