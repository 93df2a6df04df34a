"""Whether a file and its conversion options are accepted: not longer than the operator
allows, the track exists, the trim lies inside it. Used by the converter's plan and by the
gateway, which checks at upload when it can read the file."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ErrorCode, MediaError
from shared.media.info import MediaInfo, OptionMismatch
from shared.options import OPTIONS_ERROR_CODE, ConversionOptions

# Container durations are rounded and sometimes a frame longer than the audio; an `end`
# this close to the reported duration is taken to mean "the end".
DURATION_TOLERANCE = 0.05
DEFAULT_MAX_SOURCE_SECONDS = 21600.0


@dataclass(frozen=True)
class Limits:
    """Bounds on one job's work, from the operator's settings."""

    max_source_seconds: float = DEFAULT_MAX_SOURCE_SECONDS


def check_source_length(info: MediaInfo, limits: Limits) -> None:
    if info.duration is not None and info.duration > limits.max_source_seconds:
        raise MediaError(
            f"the file lasts {info.duration:.0f} s; the longest accepted is "
            f"{limits.max_source_seconds:.0f} s",
            code=ErrorCode.SOURCE_TOO_LONG,
        )


def check_options(info: MediaInfo, options: ConversionOptions) -> None:
    """The checks that need the probe. Raises OptionMismatch (HTTP 422) naming its field:
    OPTIONS_ERROR_CODE for a trim past the end, no_audio_stream for a missing track;
    MediaError(no_audio_stream) for a file with no audio at all."""
    info.select_track(options.audio_track)
    trim(info, options)


def trim(info: MediaInfo, options: ConversionOptions) -> tuple[float | None, float | None]:
    """The trim to apply (`start`, `end` in seconds, None for none); OptionMismatch when it
    does not fit the file."""
    start = options.start if options.start else None
    end = options.end
    duration = info.duration
    if duration is None:
        return start, end
    if start is not None and start >= duration:
        raise OptionMismatch(
            "start",
            f"start {start:g} s is at or past the end of the file ({duration:.3f} s)",
            code=OPTIONS_ERROR_CODE,
        )
    if end is not None and end > duration + DURATION_TOLERANCE:
        raise OptionMismatch(
            "end",
            f"end {end:g} s is past the end of the file ({duration:.3f} s)",
            code=OPTIONS_ERROR_CODE,
        )
    if end is not None and end >= duration:
        # Up to the end anyway; leaving `-to` out avoids cutting the last partial frame.
        end = None
    return start, end
