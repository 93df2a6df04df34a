"""The stream-copy fast path run inside the converter: MP3 packets from a local source into an
MP3 file through libavformat (PyAV), with no FFmpeg process.

A copy does no decoding, so its cost is per packet. FFmpeg's command line hands every packet
between its demuxer, scheduler and muxer threads; for a 10 min MP3-in-AVI that is ~0.17 s,
where the same demuxer and muxer called from here take ~0.07 s. The output is what
`build_output_command` would write: the same mp3 muxer, ID3v2.4 tags, no ID3v1, no source
metadata, a Xing header.

It is used only where the command line would add nothing: a local file, the copy path, MP3
out, no cover, no trim, and any container but MP4/MOV (see `copies_in_process`). Like the
probe, it runs in a libav process (`libav_process`), with the same protocol and format
whitelists: a crash in the demuxer ends that process, not the converter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from fractions import Fraction
from pathlib import Path

import av
import av.error

from services.converter import libav_pool
from services.converter.ffmpeg import describe_failure
from services.converter.plan import ConversionPlan
from services.converter.probe import (
    DECODER_OPTIONS,
    INPUT_OPTIONS,
    METADATA_ERRORS,
    MOV_DEMUXER,
    MediaInfo,
)
from services.converter.tags import OUTPUT_KEYS
from shared.errors import ErrorCode, MediaError

ProgressCallback = Callable[[float], Awaitable[None]]

PROGRESS_INTERVAL = 0.5
"""Seconds between progress reports; a copy runs thousands of times faster than real time."""

MUXER_OPTIONS = {"id3v2_version": "4", "write_id3v1": "0"}


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
    source: Path,
    output: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    *,
    on_progress: ProgressCallback | None,
    timeout: float,
) -> None:
    """Copy the plan's MP3 track from `source` into `output`, reporting seconds done.

    Runs in a libav process (see `libav_process`). Raises MediaError with the codes `run_ffmpeg`
    would give for the same file, and MediaError(timeout) after `timeout` seconds. On
    cancellation or timeout the process is killed and waited for, so nothing writes into the
    job's directory after this returns.
    """
    request = {
        "op": "copy",
        "source": source,
        "output": output,
        "format": info.format_name,
        "track": plan.track,
        "tags": {key: plan.tags[key] for key in OUTPUT_KEYS if key in plan.tags},
    }
    await libav_pool.copy(
        request, on_progress=on_progress, timeout=timeout, interval=PROGRESS_INTERVAL
    )


class StreamCopy:
    """One copy, run in a libav process; `seconds` is read by its progress reports."""

    # The copying thread keeps the last packet's raw timestamp: turning each into seconds
    # (Fraction arithmetic) would cost a third of the copy.

    def __init__(
        self, source: Path, output: Path, *, format_name: str, track: int, tags: dict[str, str]
    ) -> None:
        self.source = source
        self.output = output
        self.format_name = format_name
        self.track = track
        self.tags = tags
        self.first_pts: int | None = None
        self.pts: int | None = None
        self.time_base: Fraction | None = None

    @property
    def seconds(self) -> float:
        """Media time copied, counted from the first packet (as FFmpeg's progress is)."""
        first, pts, time_base = self.first_pts, self.pts, self.time_base
        if first is None or pts is None or time_base is None:
            return 0.0
        return max(0.0, float((pts - first) * time_base))

    def run(self) -> None:
        try:
            self._copy()
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            # ValueError: PyAV refusing the stream, e.g. a file swapped after the probe for one
            # whose track is no longer MP3.
            code, detail = describe_failure(self._redact(str(exc)), None)
            raise MediaError(detail, code=code) from exc

    def _copy(self) -> None:
        options = {**INPUT_OPTIONS, **DECODER_OPTIONS, "format_whitelist": self.format_name}
        with av.open(
            f"file:{self.source.resolve()}",
            "r",
            format=self.format_name,
            options=options,
            metadata_errors=METADATA_ERRORS,
        ) as source:
            if self.track >= len(source.streams.audio):
                raise MediaError(
                    "the selected audio track does not exist", code=ErrorCode.NO_AUDIO_STREAM
                )
            track = source.streams.audio[self.track]
            with av.open(
                f"file:{self.output.resolve()}", "w", format="mp3", options=MUXER_OPTIONS
            ) as target:
                stream = target.add_stream_from_template(track)
                # A new stream and file start with no metadata (`-map_metadata -1`); only the
                # tags we chose go in (a test checks the source's GPS position stays out).
                for key, value in self.tags.items():
                    target.metadata[key] = value
                self._packets(source, track, stream, target)

    def _packets(
        self,
        source: av.container.InputContainer,
        track: av.audio.stream.AudioStream,
        stream: av.audio.stream.AudioStream,
        target: av.container.OutputContainer,
    ) -> None:
        self.time_base = track.time_base
        for packet in source.demux(track):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packet.pts is not None:
                if self.first_pts is None:
                    self.first_pts = packet.pts
                self.pts = packet.pts
            packet.stream = stream
            target.mux(packet)

    def _redact(self, message: str) -> str:
        """Server paths never reach the detail a user sees."""
        for path, label in ((self.source, "<input>"), (self.output, "<output>")):
            message = message.replace(str(path.resolve()), label)
        return message
