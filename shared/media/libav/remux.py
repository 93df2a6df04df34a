"""The stream copy: MP3 packets from a local source into an MP3 file through libavformat
(PyAV), with no FFmpeg process. Child side: run in a libav process, with the probe's protocol
and format whitelists, so a crash in the demuxer ends that process, not the converter.

The output is what the converter's FFmpeg command would write for the copy path: the same mp3
muxer, ID3v2.4 tags, no ID3v1, no source metadata, a Xing header.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.error

from shared.errors import ErrorCode, MediaError
from shared.media.failures import describe_failure
from shared.media.libav.probe import DECODER_OPTIONS, INPUT_OPTIONS, METADATA_ERRORS

MUXER_OPTIONS = {"id3v2_version": "4", "write_id3v1": "0"}


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
