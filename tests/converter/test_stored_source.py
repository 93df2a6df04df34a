"""Sources kept in GridFS (on the MongoDB-wire test server): probed through ranged reads, piped
into FFmpeg when the container reads front to back, copied to a temp file otherwise."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from services.converter.pipeline import convert
from services.converter.source import StoredSource
from shared.blobstore import BlobNotFound, GridFSBlobStore
from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from shared.mongo import mongo_client
from shared.options import ConversionOptions
from tests.converter.helpers import FFMPEG, run_convert
from tests.support.media import MediaFactory, decode

H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "128k"]
FASTSTART = ["-movflags", "+faststart"]


@pytest.fixture
async def db(mongo_url: str) -> AsyncIterator[AsyncDatabase[Any]]:
    client = mongo_client(mongo_url)
    name = f"stored_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
def store(db: AsyncDatabase[Any]) -> GridFSBlobStore:
    return GridFSBlobStore(db)


async def stored(store: GridFSBlobStore, path: Path) -> StoredSource:
    blob_id = f"{uuid.uuid4().hex}-src"
    size = await store.write_file(blob_id, path)
    return StoredSource(store, blob_id, size)


def faststart_mp4(media: MediaFactory, seconds: float = 8) -> Path:
    return media.clip(
        f"faststart_{seconds}s.mp4", video=H264, audio=AAC, seconds=seconds, extra=FASTSTART
    )


def index_last_mp4(media: MediaFactory, seconds: float = 8) -> Path:
    return media.clip(f"index_last_{seconds}s.mp4", video=H264, audio=AAC, seconds=seconds)


def mkv(media: MediaFactory, seconds: float = 8) -> Path:
    return media.clip(f"h264_aac_{seconds}s.mkv", video=H264, audio=AAC, seconds=seconds)


async def run(
    libav: MediaPool, source: StoredSource, workdir: Path, form: dict[str, str] | None = None
) -> tuple[Any, bool]:
    """Convert like the service does; returns the result and whether a local copy was made."""
    workdir.mkdir(parents=True, exist_ok=True)
    info = await source.probe(libav)
    options = ConversionOptions.from_form(form or {})
    result = await convert(
        source, workdir, info, options, libav=libav, ffmpeg=FFMPEG, filename="clip.mp4"
    )
    return result, (workdir / "source").exists()


@pytest.mark.parametrize(
    ("make", "sequential"),
    [(faststart_mp4, True), (index_last_mp4, False), (mkv, True)],
    ids=["mp4-faststart", "mp4-index-last", "mkv"],
)
async def test_probe_through_ranged_reads_matches_the_local_probe(
    store: GridFSBlobStore, media: MediaFactory, make: Any, sequential: bool, libav: MediaPool
) -> None:
    path = make(media)
    local = await libav.probe(path)
    remote = await (await stored(store, path)).probe(libav)
    assert remote == local
    assert remote.sequential is sequential


async def test_avi_is_never_taken_as_sequential(media: MediaFactory, libav: MediaPool) -> None:
    assert (await libav.probe(media.mp3_in_avi())).sequential is False


@pytest.mark.parametrize("make", [faststart_mp4, mkv], ids=["mp4-faststart", "mkv"])
async def test_a_sequential_source_is_piped_and_gives_the_local_result(
    store: GridFSBlobStore, media: MediaFactory, tmp_path: Path, make: Any, libav: MediaPool
) -> None:
    path = make(media)
    piped, copied = await run(libav, await stored(store, path), tmp_path / "piped")
    assert not copied
    local = await run_convert(libav, path, tmp_path / "local", filename="clip.mp4")
    assert piped.output.read_bytes() == local.output.read_bytes()
    assert abs(decode(piped.output).duration - 8) < 0.1


async def test_an_index_at_the_end_is_copied_first(
    store: GridFSBlobStore, media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    result, copied = await run(libav, await stored(store, index_last_mp4(media)), tmp_path)
    assert copied
    assert abs(decode(result.output).duration - 8) < 0.1


@pytest.mark.parametrize(
    "form", [{"start": "2"}, {"normalize": "true"}], ids=["start-offset", "normalize"]
)
async def test_seeks_and_second_passes_read_a_local_copy(
    store: GridFSBlobStore,
    media: MediaFactory,
    tmp_path: Path,
    form: dict[str, str],
    libav: MediaPool,
) -> None:
    result, copied = await run(libav, await stored(store, mkv(media)), tmp_path, form)
    assert copied
    expected = 6 if "start" in form else 8
    assert abs(decode(result.output).duration - expected) < 0.15


async def test_an_end_trim_stops_the_pipe_early(
    store: GridFSBlobStore, media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # FFmpeg stops reading at `end` and closes its stdin while bytes are still being written.
    result, copied = await run(libav, await stored(store, mkv(media, 60)), tmp_path, {"end": "3"})
    assert not copied
    assert abs(decode(result.output).duration - 3) < 0.1


async def test_a_truncated_source_fails_as_unreadable_after_the_copy_retry(
    store: GridFSBlobStore, media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    whole = faststart_mp4(media).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    with pytest.raises(MediaError) as failed:
        await run(libav, await stored(store, cut), tmp_path / "work")
    assert failed.value.code is ErrorCode.UNREADABLE_MEDIA
    assert (tmp_path / "work" / "source").exists()


async def test_a_blob_damaged_mid_read_raises_the_store_error(
    store: GridFSBlobStore,
    db: AsyncDatabase[Any],
    media: MediaFactory,
    tmp_path: Path,
    libav: MediaPool,
) -> None:
    # 60 s at 320x240 is ~6.5 MB: chunk 4 (the fifth MiB) is read only once FFmpeg is running.
    path = media.clip(
        "faststart_60s_320.mp4", video=H264, audio=AAC, seconds=60, size="320x240",
        extra=FASTSTART,
    )  # fmt: skip
    source = await stored(store, path)
    info = await source.probe(libav)
    assert info.sequential
    files = await db["fs.files"].find_one({"filename": source.blob_id})
    assert files is not None
    await db["fs.chunks"].delete_one({"files_id": files["_id"], "n": 4})
    (tmp_path / "w").mkdir()
    with pytest.raises(BlobNotFound):
        await convert(
            source,
            tmp_path / "w",
            info,
            ConversionOptions.from_form({}),
            libav=libav,
            ffmpeg=FFMPEG,
            filename="clip.mp4",
        )
