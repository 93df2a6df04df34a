"""The stream-copy fast path: MP3 packets from a local source into an MP3 file through
libavformat (PyAV, in a libav process: `shared.media.libav.remux`), with no FFmpeg process.

A copy does no decoding, so its cost is per packet. FFmpeg's command line hands every packet
between its demuxer, scheduler and muxer threads; for a 10 min MP3-in-AVI that is ~0.17 s,
where the same demuxer and muxer called from PyAV take ~0.07 s. The output is what
`build_output_command` would write.

It is used only where the command line would add nothing: a local file, the copy path, MP3
out, no cover, no trim, and any container but MP4/MOV (see `copies_in_process`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from services.converter.plan import ConversionPlan
from services.converter.tags import OUTPUT_KEYS
from shared.media import MediaInfo, MediaPool
from shared.media.info import MOV_DEMUXER
from shared.media.protocol import Copy

ProgressCallback = Callable[[float], Awaitable[None]]


def copies_in_process(
    source: object, info: MediaInfo, plan: ConversionPlan, cover: Path | None
) -> bool:
    """Whether `copy_mp3` can write this plan's output."""
    return (
        isinstance(source, Path)
        and plan.path == "copy"
        and plan.format == "mp3"
        and cover is None
        and plan.start is None
        and plan.end is None
        # MP4/MOV stays with the command line: it reports a cut-off file ("partial file", an
        # error for us) and carries the stream's length into the LAME tag's end padding;
        # through PyAV a cut file would pass and the decoded length would be off.
        and info.format_name != MOV_DEMUXER
    )


async def copy_mp3(
    libav: MediaPool,
    source: Path,
    output: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    *,
    on_progress: ProgressCallback | None,
    timeout: float,
) -> None:
    """Copy the plan's MP3 track from `source` into `output`, reporting seconds done.

    Raises MediaError with the codes `run_ffmpeg` would give for the same file, and
    MediaError(timeout) after `timeout` seconds. On cancellation or timeout the process is
    killed and waited for, so nothing writes into the job's directory after this returns.
    """
    request = Copy(
        source=str(source),
        output=str(output),
        format=info.format_name,
        track=plan.track,
        tags={key: plan.tags[key] for key in OUTPUT_KEYS if key in plan.tags},
    )
    await libav.copy(request, on_progress=on_progress, timeout=timeout)
