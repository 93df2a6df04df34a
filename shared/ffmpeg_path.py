"""Which FFmpeg binary to run: FFMPEG_PATH, else one on PATH, else the one imageio-ffmpeg ships."""

from __future__ import annotations

import os
import shutil
from functools import cache


@cache
def ffmpeg_executable(configured: str | None = None) -> str:
    configured = configured or os.environ.get("FFMPEG_PATH")
    if configured:
        return configured
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
