"""Read what an uploaded file contains (container, duration, audio tracks) with PyAV.

Nothing here runs FFmpeg or touches the network: the file is opened through libavformat's
`file` protocol only, in a worker thread so the event loop never blocks on disk or parsing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.error
import av.stream

from shared.errors import ErrorCode, MediaError
from shared.jobs import AudioTrack, SourceInfo

UNREADABLE_DETAIL = "the file could not be read as audio or video"

# libavformat may follow references from one file to others when asked to (`file` stays allowed
# for the input itself, so nested local files could still be read). Demuxers whose job is to
# reference other files, or that read plain text as "video", are not media uploads.
REFUSED_DEMUXERS = frozenset(
    {
        "concat",
        "hls",
        "applehttp",
        "dash",
        "ffmetadata",
        "image2",
        "tty",
        "sdp",
        "rtsp",
        "rtp",
        "lavfi",
    }
)

# Every nested open (playlists, references, `-i` of the converter) is held to this list.
INPUT_OPTIONS = {"protocol_whitelist": "file"}

# ISO 639-2 for "undetermined": what muxers write when nobody set a language.
UNDETERMINED_LANGUAGE = "und"


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


async def probe(path: Path) -> MediaInfo:
    """Describe `path`, or raise MediaError(unreadable_media) if it is not audio or video.

    A missing file raises FileNotFoundError: that is the caller's bug, not the user's upload.
    """
    return await asyncio.to_thread(probe_sync, path)


def probe_sync(path: Path) -> MediaInfo:
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        # `file:` stops a name such as "http:x.mp4" or "a:b" from being read as a protocol.
        with av.open(f"file:{path.resolve()}", container_options=INPUT_OPTIONS) as container:
            return _describe(container)
    except av.error.FFmpegError as exc:
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA) from exc


def _describe(container: av.container.InputContainer) -> MediaInfo:
    format_name = demuxer_short_name(container.format.name, container.format.long_name)
    if format_name in REFUSED_DEMUXERS:
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)

    audio_streams = list(container.streams.audio)
    video_streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not audio_streams and not video_streams:
        # Subtitles-only or data-only files (an .srt renamed .mp4) are not videos without sound.
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)

    tracks = [
        AudioTrack(
            index=position,
            codec=codec_name(stream),
            channels=stream.codec_context.channels or None,
            sample_rate=stream.codec_context.sample_rate or None,
            language=_language(stream.metadata.get("language")),
            title=stream.metadata.get("title") or None,
        )
        for position, stream in enumerate(audio_streams)
    ]
    return MediaInfo(
        container=container.format.name,
        format_name=format_name,
        duration=_duration(container),
        bitrate=container.bit_rate or None,
        video_codec=codec_name(video_streams[0]) if video_streams else None,
        audio_tracks=tracks,
        tags={str(key).lower(): str(value) for key, value in container.metadata.items()},
    )


def demuxer_short_name(names: str, long_name: str) -> str:
    """Pick the name from a demuxer's comma list that resolves back to the same demuxer.

    libavformat matches `-f NAME` against every entry of a demuxer's comma list, so the first
    entry normally works; checking it guards against an alias claimed by an earlier demuxer.
    """
    candidates = [name.strip() for name in names.split(",") if name.strip()]
    for candidate in candidates:
        try:
            resolved = av.ContainerFormat(candidate, "r")
        except (ValueError, av.error.FFmpegError):
            continue
        if resolved.long_name == long_name:
            return candidate
    return candidates[0] if candidates else names


def _duration(container: av.container.InputContainer) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    longest: float | None = None
    for stream in container.streams:
        if stream.duration is None or stream.time_base is None or stream.duration <= 0:
            continue
        seconds = float(stream.duration * Fraction(stream.time_base))
        if longest is None or seconds > longest:
            longest = seconds
    return longest


def codec_name(stream: av.stream.Stream) -> str | None:
    """The codec's own name ("mp3"), not the decoder's ("mp3float")."""
    context = stream.codec_context
    if context is None:
        return None
    codec = context.codec
    return getattr(codec, "canonical_name", None) or context.name or None


def _is_cover_art(stream: av.stream.Stream) -> bool:
    disposition = getattr(stream, "disposition", None)
    attached = getattr(av.stream, "Disposition", None)
    if disposition is None or attached is None:
        return False
    return bool(disposition & attached.attached_pic)


def _language(value: str | None) -> str | None:
    if not value or value == UNDETERMINED_LANGUAGE:
        return None
    return value
