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


@pytest.mark.parametrize("how", ["write", "write_file"])
async def test_a_new_directory_is_made_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # Which directories get fsynced is only visible from inside; the real fsync still runs.
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    root = tmp_path / "blobs"
    root.mkdir()
    store = FileBlobStore(root)
    source = tmp_path / "out.mp3"
    source.write_bytes(b"mp3")

    async def put(blob_id: str) -> None:
        if how == "write":
            await store.write(blob_id, pieces(b"bytes"))
        else:
            await store.write_file(blob_id, source)

    await put("cd0001")
    # The new `cd/` entry in the root, and the blob's entry in `cd/`.
    assert str(root) in synced
    assert str(root / "cd") in synced
    synced.clear()
    await put("cd0002")
    assert str(root) not in synced  # `cd/` exists already: nothing new in the root
    assert str(root / "cd") in synced


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
