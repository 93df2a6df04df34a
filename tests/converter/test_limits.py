"""Bounded work per job: a source past MAX_SOURCE_SECONDS is refused, and a source that lies
about its length is stopped at its output's caps, with real FFmpeg."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.converter.pipeline import convert
from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from shared.media.fit import Limits
from shared.options import ConversionOptions
from tests.converter.helpers import FFMPEG, lying_flac, silent_flac
from tests.support.media import MediaFactory


async def test_a_source_past_the_limit_is_refused(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = silent_flac(media, 3600)
    info = await libav.probe(source)
    with pytest.raises(MediaError) as caught:
        await convert(
            source, tmp_path, info, ConversionOptions(),
            libav=libav, ffmpeg=FFMPEG, filename="a.flac",
            limits=Limits(max_source_seconds=1800),
        )  # fmt: skip
    assert caught.value.code is ErrorCode.SOURCE_TOO_LONG
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
async def test_a_source_lying_about_its_length_stops_at_the_cap(
    media: MediaFactory, tmp_path: Path, fmt: str, libav: MediaPool
) -> None:
    # Claims 10 s, holds an hour: as WAV that was 691 MB written in seconds.
    source = lying_flac(media, 3600, claims=10)
    info = await libav.probe(source)
    assert info.duration == pytest.approx(10)
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await convert(
            source, tmp_path, info, ConversionOptions.from_form({"format": fmt}),
            libav=libav, ffmpeg=FFMPEG, filename="a.flac",
        )  # fmt: skip
    assert caught.value.code is ErrorCode.OUTPUT_TOO_LARGE
    assert time.monotonic() - started < 60
    # Cut at 2 x 10 s + 60 s: 80 s of audio at most, never the hour.
    written = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert written < 80 * 8000 * 4 + 8 * 1024 * 1024


async def test_an_honest_source_near_its_length_converts(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = silent_flac(media, 120)
    info = await libav.probe(source)
    result = await convert(
        source, tmp_path, info, ConversionOptions.from_form({"format": "wav"}),
        libav=libav, ffmpeg=FFMPEG, filename="a.flac", limits=Limits(max_source_seconds=120),
    )  # fmt: skip
    assert result.media.duration == pytest.approx(120, abs=0.1)
