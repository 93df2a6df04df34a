"""What can only be checked against the file itself (its length; a trim inside it, an existing
track): checked at upload against the stored bytes, so the client gets a 422 instead of a job
that fails later. A local blob is probed in place; a GridFS one through ranged reads
(`BlobFile`), which fetch only the blocks the demuxer asks for."""

from __future__ import annotations

import asyncio

from shared.blobstore import BlobFile, BlobStore
from shared.errors import MediaError
from shared.media import MediaPool, OptionMismatch
from shared.media.fit import Limits, check_options, check_source_length
from shared.options import ConversionOptions, InvalidOptions


def needs_source(options: ConversionOptions) -> bool:
    return options.start is not None or options.end is not None or options.audio_track is not None


async def check_against_source(
    libav: MediaPool,
    blobs: BlobStore,
    blob_id: str,
    size: int,
    options: ConversionOptions,
    max_source_seconds: float | None = None,
) -> None:
    """`source_too_long` past `max_source_seconds`; the options' checks when they need the
    file: InvalidOptions naming the option that does not fit, or MediaError(no_audio_stream)
    when the file has no sound whatever the options. Every check but the length is skipped for
    options that do not need the file."""
    if max_source_seconds is None and not needs_source(options):
        return
    local = blobs.local_path(blob_id)
    source = local or BlobFile(blobs, blob_id, size, asyncio.get_running_loop())
    try:
        info = await libav.probe(source)
    except MediaError:
        return  # an unreadable file is the converter's to report, on the job
    if max_source_seconds is not None:
        check_source_length(info, Limits(max_source_seconds=max_source_seconds))
    if not needs_source(options):
        return
    try:
        check_options(info, options)
    except OptionMismatch as exc:
        raise InvalidOptions([{"field": exc.field, "reason": exc.detail}]) from None
