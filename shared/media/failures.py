"""What FFmpeg and libav say when they fail, as a stable code and a short human reason (pure).
Read by the converter's FFmpeg runs (`services/converter/ffmpeg.py`) and by the libav process's
stream copy (`libav/remux.py`), which meet the same libav messages."""

from __future__ import annotations

import re

from shared.errors import ErrorCode

_TRUNCATED = ("partial file", "moov atom not found", "truncat", "file ended prematurely")
_UNREADABLE = ("invalid data found when processing input", "could not find codec parameters")
_CONTEXT_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")
_GENERIC_LINES = ("conversion failed", "error opening input files", "error opening input file")


def input_was_truncated(stderr: str) -> bool:
    # FFmpeg exits 0 on a cut-off file it can still read: it converts what is there and says
    # so ("partial file" for MP4, "File ended prematurely" for Matroska). A shorter MP3 than
    # the upload is a failure, not a success.
    return any(marker in line for line in _log_lines(stderr) for marker in _CUT_OFF)


_CUT_OFF = ("partial file", "file ended prematurely")


def _log_lines(stderr: str) -> list[str]:
    """FFmpeg's own messages, lower-cased: the lines it prefixes with their source. Not the dump
    of the input (`Input #0`, its `Metadata:`), where a tag may say anything at all."""
    return [line.lower() for line in stderr.splitlines() if line.startswith("[")]


def describe_failure(
    stderr: str, returncode: int | None, *, truncated_tail: bool = False
) -> tuple[ErrorCode, str]:
    """A stable code and a short human reason for a failed FFmpeg run."""
    lowered = stderr.lower()
    logged = "\n".join(_log_lines(stderr))
    if any(marker in logged for marker in _TRUNCATED):
        return ErrorCode.UNREADABLE_MEDIA, "the file is incomplete or truncated"
    if "matches no streams" in lowered:
        return ErrorCode.NO_AUDIO_STREAM, "the selected audio track does not exist"
    if "no space left on device" in lowered:
        return ErrorCode.CONVERSION_FAILED, "the converter ran out of disk space"
    # "Decoder (codec x) not found"; FFmpeg 7+: "Decoding requested, but no decoder found".
    if ("decoder" in lowered and "not found" in lowered) or "no decoder found" in lowered:
        return ErrorCode.CONVERSION_FAILED, "the audio codec is not supported"
    if any(marker in lowered for marker in _UNREADABLE):
        return ErrorCode.UNREADABLE_MEDIA, "the file could not be read as audio or video"
    if returncode is not None and returncode < 0:
        return ErrorCode.CONVERSION_FAILED, f"ffmpeg was stopped by signal {-returncode}"
    reason = _first_reason(stderr, skip_first=truncated_tail)
    detail = f"ffmpeg failed: {reason}" if reason else f"ffmpeg failed (exit code {returncode})"
    return ErrorCode.CONVERSION_FAILED, detail


def _first_reason(stderr: str, *, skip_first: bool) -> str:
    lines = stderr.splitlines()
    if skip_first:
        lines = lines[1:]  # cut mid-line when the tail overflowed
    for line in lines:
        if _is_dump(line):
            continue
        cleaned = _CONTEXT_PREFIX.sub("", line).strip()
        if cleaned and not cleaned.lower().startswith(_GENERIC_LINES):
            return cleaned[:200]
    return ""


def _is_dump(line: str) -> bool:
    """A line of FFmpeg's description of its input or output (at -loglevel info), not a reason."""
    return line.startswith((" ", "\t", "Input #", "Output #", "Stream mapping:", "Press [q]"))
