"""Options that only make sense against the file itself (trim inside it, an existing track):
checked at upload when the stored bytes are on local disk, so the client gets a 422 instead of
a job that fails later. Elsewhere (GridFS) the converter reports the same error on the job."""

from __future__ import annotations

from pathlib import Path

from services.converter.plan import check_options
from services.converter.probe import probe
from shared.errors import ErrorCode, MediaError
from shared.options import ConversionOptions, InvalidOptions


def needs_source(options: ConversionOptions) -> bool:
    return options.start is not None or options.end is not None or options.audio_track is not None


def _field_of(detail: str) -> str:
    for field in ("audio_track", "start", "end"):
        if detail.startswith(field):
            return field
    return "audio_track"


async def check_against_source(path: Path, options: ConversionOptions) -> None:
    try:
        info = await probe(path)
    except MediaError:
        return  # an unreadable file is the converter's to report, on the job
    try:
        check_options(info, options)
    except MediaError as exc:
        if exc.code is ErrorCode.INVALID_OPTIONS or options.audio_track is not None:
            raise InvalidOptions([{"field": _field_of(exc.detail), "reason": exc.detail}]) from None
