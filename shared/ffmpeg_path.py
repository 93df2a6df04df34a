"""Which FFmpeg binary to run: FFMPEG_PATH, else the one imageio-ffmpeg ships.

Never one found on PATH: the tests, the benchmarks and the container image all run imageio-ffmpeg's
build, so what ships is what was tested; FFMPEG_PATH is the deliberate way to run another.
"""

from __future__ import annotations

import os
from functools import cache


@cache
def ffmpeg_executable(configured: str | None = None) -> str:
    configured = configured or os.environ.get("FFMPEG_PATH")
    if configured:
        return configured
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
