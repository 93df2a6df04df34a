"""A two-hour upload, end to end through the entry point (slow: `pytest -m slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.converter.pipeline import convert
from shared.media import MediaPool
from shared.options import ConversionOptions
from tests.converter.helpers import FFMPEG
from tests.support.media import MediaFactory, decode

TWO_HOURS = 7200


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_two_hour_low_res_clip(media: MediaFactory, tmp_path: Path, libav: MediaPool) -> None:
    source = media.clip(
        "two_hours.mp4",
        video=["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-r", "1"],
        audio=["-c:a", "aac", "-b:a", "32k"],
        seconds=TWO_HOURS,
        sample_rate=22050,
        channels=1,
        size="64x36",
    )
    info = await libav.probe(source)
    assert info.duration == pytest.approx(TWO_HOURS, abs=3)  # the last video frame lingers
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    options = ConversionOptions.from_form({"cover": "frame", "start": "0:30:00"})
    result = await convert(
        source, tmp_path, info, options, libav=libav, ffmpeg=FFMPEG, filename="lecture.mp4",
        on_progress=on_progress,
    )  # fmt: skip
    decoded = decode(result.output)
    assert (decoded.codec, decoded.channels, decoded.sample_rate) == ("mp3", 1, 22050)
    assert decoded.duration == pytest.approx(TWO_HOURS - 1800, abs=0.1)
    assert result.media.duration == pytest.approx(TWO_HOURS - 1800, abs=1)
    assert result.cover
    assert seen == sorted(seen)
    assert len(seen) > 10
    assert seen[-1] == pytest.approx(1.0, abs=0.01)  # the container says 2 s more than the audio
