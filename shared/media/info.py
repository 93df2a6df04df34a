"""What reading a file tells us: the description of an upload (`MediaInfo`) and of an output
we wrote (`OutputMedia`). Plain data, read on both sides of the libav process boundary; nothing
here touches libav."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import ErrorCode, MediaError
from shared.jobs import AudioTrack, OutputInfo, SourceInfo

UNREADABLE_DETAIL = "the file could not be read as audio or video"
UNREADABLE_OUTPUT_DETAIL = "the converter produced an unreadable file"

# Opening a file decodes a frame of each stream to learn its format: three 16000x16000 PNG
# "video" streams in a 6 MB upload took 33 s and 5.9 GB doing it. No decoder (ours or FFmpeg's)
# makes a picture larger than twice 8K UHD; video is never needed beyond its presence anyway.
MAX_PIXELS = 7680 * 4320 * 2
MOV_DEMUXER = "mov"
# About -60 dBFS: quieter than any real recording's noise floor, louder than dither.
AUDIBLE_PEAK = 0.001


def unreadable() -> MediaError:
    return MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)


@dataclass(frozen=True)
class TrackActivity:
    """What the opening window of one audio track held."""

    packets: int
    peak: float
    """Largest absolute sample value decoded (1.0 = full scale)."""

    @property
    def empty(self) -> bool:
        return self.packets == 0

    @property
    def audible(self) -> bool:
        return self.peak >= AUDIBLE_PEAK


@dataclass(frozen=True)
class MediaInfo:
    container: str
    """Demuxer name(s) as libavformat reports them, e.g. "mov,mp4,m4a,3gp,3g2,mj2"."""
    format_name: str
    """The one demuxer name `ffmpeg -f` accepts for this file, e.g. "mov" or "matroska"."""
    duration: float | None
    bitrate: int | None
    video_codec: str | None
    audio_tracks: list[AudioTrack] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    """Container-level tags, keys lower-cased."""
    track_tags: list[dict[str, str]] = field(default_factory=list)
    """Each audio track's own tags, keys lower-cased (Ogg and FLAC keep their tags here)."""
    activity: list[TrackActivity] = field(default_factory=list)
    """Per audio track, when the file has more than one; empty otherwise."""
    has_video: bool = False
    """A real video stream (not a cover picture) that a cover frame can be taken from."""
    sequential: bool = False
    """FFmpeg can read the file front to back from a pipe (`libav.probe.SEQUENTIAL_DEMUXERS`)."""
    unplaced: list[bool] = field(default_factory=list)
    """Per audio track: FFmpeg cannot tell which speaker its channels belong to (no layout,
    none to guess), so mixing it down needs a matrix of ours. Empty: every track is placed."""

    ambisonic: list[bool] = field(default_factory=list)
    """Per audio track: a sound field (360° video), not speakers; its first channel (W) hears
    everything from everywhere. Empty: none is."""

    def is_unplaced(self, track: int) -> bool:
        return track < len(self.unplaced) and self.unplaced[track]

    def is_ambisonic(self, track: int) -> bool:
        return track < len(self.ambisonic) and self.ambisonic[track]

    @property
    def default_track(self) -> int:
        """The audio track converted when the request names none.

        The first track that has sound in its opening seconds; failing that the first that has
        any packets; failing that the first. An empty or muted first track (seen in camera
        files and remuxes) must not turn into an empty or silent result when another track
        has the actual sound.
        """
        if not self.activity:
            return 0
        for position, activity in enumerate(self.activity):
            if activity.audible:
                return position
        for position, activity in enumerate(self.activity):
            if not activity.empty:
                return position
        return 0

    def select_track(self, requested: int | None) -> int:
        """The track to convert: `requested`, else the default; MediaError if there is none."""
        if not self.audio_tracks:
            raise MediaError("the file has no audio track", code=ErrorCode.NO_AUDIO_STREAM)
        if requested is None:
            return self.default_track
        if not 0 <= requested < len(self.audio_tracks):
            count = len(self.audio_tracks)
            raise OptionMismatch(
                "audio_track",
                f"audio_track {requested} does not exist: the file has {count} audio "
                f"track{'s' if count != 1 else ''} (0 to {count - 1})",
                code=ErrorCode.NO_AUDIO_STREAM,
            )
        return requested

    def to_source_info(self, size: int) -> SourceInfo:
        first = self.audio_tracks[0] if self.audio_tracks else None
        return SourceInfo(
            size=size,
            duration=self.duration,
            container=self.container,
            audio_codec=first.codec if first else None,
            video_codec=self.video_codec,
            channels=first.channels if first else None,
            sample_rate=first.sample_rate if first else None,
            bitrate=self.bitrate,
            audio_tracks=[track.model_copy() for track in self.audio_tracks],
        )


class OptionMismatch(MediaError):
    """An option that does not fit this file (a track it lacks, a trim past its end); `field`
    names the option, for the gateway's per-field 422."""

    def __init__(self, field: str, detail: str, *, code: ErrorCode) -> None:
        super().__init__(detail, code=code)
        self.field = field


@dataclass(frozen=True)
class OutputMedia:
    codec: str
    duration: float | None
    bitrate: int | None
    channels: int | None
    sample_rate: int | None

    @classmethod
    def silent(cls, output_format: str) -> OutputMedia:
        """An output with no audio in it: the caller says which track held no sound."""
        return cls(
            codec=output_format, duration=None, bitrate=None, channels=None, sample_rate=None
        )

    def to_output_info(
        self, size: int, filename: str, content_type: str = "audio/mpeg"
    ) -> OutputInfo:
        return OutputInfo(
            size=size,
            duration=self.duration,
            bitrate=self.bitrate,
            codec=self.codec,
            channels=self.channels,
            sample_rate=self.sample_rate,
            filename=filename,
            content_type=content_type,
        )
