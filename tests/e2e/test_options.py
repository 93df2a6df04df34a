"""Conversion options through the public API: validation, echo, formats, trim, fast path."""

from __future__ import annotations

from pathlib import Path

import httpx
import mutagen

from tests.e2e.test_pipeline import auth, stored_blobs, wait_final
from tests.support.media import MediaFactory, decode
from tests.support.stack import Stack


async def upload_with(
    client: httpx.AsyncClient, user: dict[str, str], path: Path, **fields: str
) -> httpx.Response:
    with path.open("rb") as f:
        return await client.post(
            "/v1/jobs", headers=auth(user), data=fields, files={"file": (path.name, f)}
        )


async def test_invalid_options_are_refused_before_anything_is_stored(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, stack: Stack
) -> None:
    before = await stored_blobs(stack)
    response = await upload_with(
        client, user, media.h264_aac(2), bitrate="100", quality="2", start="5", end="3"
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_options"
    fields = {e["field"] for e in body["errors"]}
    assert {"bitrate"} <= fields
    assert await stored_blobs(stack) == before
    unknown = await upload_with(client, user, media.h264_aac(2), colour="blue")
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "colour"


async def test_trim_tags_and_format_are_applied_and_echoed(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    response = await upload_with(
        client, user, media.h264_aac(10), start="00:00:02", end="7.5", title="Ünïcode", artist="Me"
    )
    assert response.status_code == 202, response.text
    assert response.json()["options"]["start"] == 2.0
    assert response.json()["options"]["end"] == 7.5
    job = await wait_final(client, user, response.json()["id"])
    assert job["status"] == "completed", job
    assert job["output"]["path"] == "encode"
    mp3 = await client.get(job["output"]["download_url"], headers=auth(user))
    (tmp_path / "trim.mp3").write_bytes(mp3.content)
    assert abs(decode(tmp_path / "trim.mp3").duration - 5.5) < 0.05
    tags = mutagen.File(tmp_path / "trim.mp3")
    assert str(tags["TIT2"]) == "Ünïcode"
    assert str(tags["TPE1"]) == "Me"

    m4a = await upload_with(client, user, media.h264_aac(3), format="m4a")
    job = await wait_final(client, user, m4a.json()["id"])
    download = await client.get(job["output"]["download_url"], headers=auth(user))
    assert download.headers["content-type"] == "audio/mp4"
    assert ".m4a" in download.headers["content-disposition"]
    (tmp_path / "out.m4a").write_bytes(download.content)
    assert decode(tmp_path / "out.m4a").codec == "aac"


async def test_mp3_source_takes_the_copy_path(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, tmp_path: Path
) -> None:
    source = media.mp3_in_avi(6)
    copied = await wait_final(client, user, (await upload_with(client, user, source)).json()["id"])
    assert copied["output"]["path"] == "copy"
    encoded = await wait_final(
        client, user, (await upload_with(client, user, source, bitrate="128")).json()["id"]
    )
    assert encoded["output"]["path"] == "encode"


async def test_end_past_the_source_is_refused(
    client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory, stack: Stack
) -> None:
    before = await stored_blobs(stack)
    response = await upload_with(client, user, media.h264_aac(3), end="30")
    # Checked at upload on both backends (GridFS through ranged reads); nothing is kept.
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_options"
    assert response.json()["errors"][0]["field"] == "end"
    assert "past the end" in response.json()["detail"]
    assert await stored_blobs(stack) == before
    track = await upload_with(client, user, media.h264_aac(3), audio_track="3")
    assert track.status_code == 422
    assert track.json()["errors"][0]["field"] == "audio_track"
    assert await stored_blobs(stack) == before
