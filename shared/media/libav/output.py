"""Describe an output we wrote, read back with PyAV. Child side: its cover picture came from
the user, so it is read in a libav process like an upload."""

from __future__ import annotations

from pathlib import Path

import av
import av.error

from shared.errors import ErrorCode, MediaError
from shared.media.info import UNREADABLE_OUTPUT_DETAIL, OutputMedia
from shared.media.libav.probe import INPUT_OPTIONS, METADATA_ERRORS, codec_name

# The demuxer that reads each output format back. Named, not probed: a valid MP3 of a few
# frames has too little in it for FFmpeg's guess (it took one for VVC video).
_OUTPUT_DEMUXERS = {"mp3": "mp3", "m4a": "mov", "opus": "ogg", "flac": "flac", "wav": "wav"}


def inspect_sync(path: Path, output_format: str) -> OutputMedia:
    """Describe a finished output in `output_format` (one of the formats we write).

    For MP3 the Xing header makes the container's duration exact enough. An output with no
    audio in it has no duration (`OutputMedia.silent`).
    """
    if path.stat().st_size == 0:
        return OutputMedia.silent(output_format)
    try:
        with av.open(
            f"file:{path.resolve()}",
            format=_OUTPUT_DEMUXERS.get(output_format),
            container_options=INPUT_OPTIONS,
            metadata_errors=METADATA_ERRORS,
        ) as container:
            if not container.streams.audio:
                return OutputMedia.silent(output_format)
            stream = container.streams.audio[0]
            duration: float | None = None
            if container.duration is not None and container.duration > 0:
                duration = container.duration / av.time_base
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            bitrate = container.bit_rate or stream.bit_rate or None
            return OutputMedia(
                codec=codec_name(stream) or "mp3",
                duration=duration,
                bitrate=bitrate,
                channels=stream.codec_context.channels or None,
                sample_rate=stream.codec_context.sample_rate or None,
            )
    except av.error.FFmpegError as exc:
        raise MediaError(UNREADABLE_OUTPUT_DETAIL, code=ErrorCode.CONVERSION_FAILED) from exc
