"""Read what an uploaded file contains (container, duration, audio tracks) with PyAV.

Nothing here runs FFmpeg: a local file is opened through libavformat's `file` protocol only,
a blob elsewhere (GridFS) through a block-reading file object. Child side: only a libav
process (`shared.media.child`) runs this, never a service.
"""

from __future__ import annotations

import ctypes
import io
import time
from array import array
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.audio.stream
import av.container
import av.error
import av.stream

from shared.errors import ErrorCode, MediaError
from shared.jobs import AudioTrack
from shared.media.info import (
    AUDIBLE_PEAK,
    MAX_PIXELS,
    MOV_DEMUXER,
    UNREADABLE_DETAIL,
    MediaInfo,
    TrackActivity,
)

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
# For PyAV's `options`, which reach the container and every stream's decoder (its per-stream
# `stream_options` are refused by demuxers that find their streams late, MPEG-PS and FLV).
DECODER_OPTIONS = {"max_pixels": str(MAX_PIXELS)}
# Tags in other encodings than UTF-8 (Latin-1 RIFF INFO from Windows tools) are read with
# replacement characters: PyAV's default, "strict", fails the whole file over one tag.
METADATA_ERRORS = "replace"

# Demuxers that read a file front to back with no seek back, so FFmpeg can take the bytes from
# a pipe while they are still being fetched. MP4/MOV qualifies only when its index (`moov`)
# precedes the media (`mdat`), see `_index_first`. AVI and ASF are left out: their demuxers
# look for an index at the end.
SEQUENTIAL_DEMUXERS = frozenset(
    {"matroska", "mpegts", "mpeg", "flv", "ogg", "mp3", "aac", "flac", "wav"}
)
# Top-level boxes looked at before giving up on finding `moov` or `mdat`.
MAX_TOP_LEVEL_BOXES = 64

# ISO 639-2 for "undetermined": what muxers write when nobody set a language.
UNDETERMINED_LANGUAGE = "und"

# When a file has several audio tracks, their opening seconds are decoded to tell an empty or
# silent track (a muted camera channel, a placeholder) from one with sound. Bounded both in
# media time and in bytes read, so a huge video costs no more than a short one.
ACTIVITY_WINDOW_SECONDS = 20.0
ACTIVITY_MAX_BYTES = 64 * 1024 * 1024
# And in time: decoding is bounded by neither of the above (a FLAC track at 655 kHz, timestamps
# that never reach the window), and this only picks a default track.
ACTIVITY_MAX_SECONDS = 2.0

# FFmpeg places the channels of a track that names no layout on its standard layout for their
# count, which exists for up to 8 channels in every version we meet (newer ones add a few wider
# counts, older ones do not).
GUESSED_LAYOUT_MAX_CHANNELS = 8

# AVChannel ids (a stable part of libavutil's ABI) of the channel names FFmpeg gives: in a
# layout in FFmpeg's native order they ascend. See `_channel_names`.
_NATIVE_CHANNEL_IDS = {
    "FL": 0, "FR": 1, "FC": 2, "LFE": 3, "BL": 4, "BR": 5, "FLC": 6, "FRC": 7, "BC": 8, "SL": 9,
    "SR": 10, "TC": 11, "TFL": 12, "TFC": 13, "TFR": 14, "TBL": 15, "TBC": 16, "TBR": 17,
    "DL": 29, "DR": 30, "WL": 31, "WR": 32, "SDL": 33, "SDR": 34, "LFE2": 35, "TSL": 36,
    "TSR": 37, "BFC": 38, "BFL": 39, "BFR": 40, "SSL": 41, "SSR": 42, "TTL": 43, "TTR": 44,
    "BIL": 61, "BIR": 62,
}  # fmt: skip


def probe_sync(source: Path | io.RawIOBase) -> MediaInfo:
    """Describe `source`, or raise MediaError(unreadable_media) if it is not audio or video.

    `source` is a local path or a seekable binary file object. A missing file raises
    FileNotFoundError: that is the caller's bug, not the user's upload. Blocking, and native
    code run on hostile bytes: the services reach it only through `shared.media.MediaPool`,
    in a process of its own.
    """
    if isinstance(source, Path):
        if not source.is_file():
            raise FileNotFoundError(source)
        with source.open("rb") as raw:
            return _probe(f"file:{source.resolve()}", raw)
    return _probe(source, source)


def _probe(target: str | io.RawIOBase, raw: io.RawIOBase | io.BufferedReader) -> MediaInfo:
    try:
        # `file:` stops a name such as "http:x.mp4" or "a:b" from being read as a protocol.
        with av.open(
            target,
            "r",
            options=DECODER_OPTIONS,
            container_options=INPUT_OPTIONS,
            metadata_errors=METADATA_ERRORS,
        ) as container:
            info = _describe(container)
    except av.error.FFmpegError as exc:
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA) from exc
    if info.format_name in SEQUENTIAL_DEMUXERS or (
        info.format_name == MOV_DEMUXER and _index_first(raw)
    ):
        info = replace(info, sequential=True)
    return info


def _index_first(raw: io.RawIOBase | io.BufferedReader) -> bool:
    """Whether an ISO BMFF file's `moov` (or a fragment's `moof`) comes before any `mdat`."""
    raw.seek(0, io.SEEK_END)
    size = raw.tell()
    pos = 0
    for _ in range(MAX_TOP_LEVEL_BOXES):
        if pos + 8 > size:
            return False
        raw.seek(pos)
        header = raw.read(16)
        if len(header) < 8:
            return False
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if kind in (b"moov", b"moof"):
            return True
        if kind == b"mdat":
            return False
        if length == 1 and len(header) == 16:
            length = int.from_bytes(header[8:16], "big")
        if length < 8:  # 0 means "to the end of the file"; smaller values are damage
            return False
        pos += length
    return False


def _describe(container: av.container.InputContainer) -> MediaInfo:
    format_name = demuxer_short_name(container.format.name, container.format.long_name)
    if format_name in REFUSED_DEMUXERS:
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)

    audio_streams = list(container.streams.audio)
    video_streams = [s for s in container.streams.video if not _is_cover_art(s)]
    if not audio_streams and not video_streams:
        # Subtitles-only or data-only files (an .srt renamed .mp4) are not videos without sound.
        raise MediaError(UNREADABLE_DETAIL, code=ErrorCode.UNREADABLE_MEDIA)

    names = [_channel_names(stream) for stream in audio_streams]
    tracks = [
        AudioTrack(
            index=position,
            codec=codec_name(stream),
            channels=len(names[position]) or None,
            sample_rate=(stream.codec_context.sample_rate if stream.codec_context else 0) or None,
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
        tags=_lowered(container.metadata),
        track_tags=[_lowered(stream.metadata) for stream in audio_streams],
        activity=(
            _activity(container, audio_streams, [_decodable(channels) for channels in names])
            if len(audio_streams) > 1
            else []
        ),
        has_video=bool(video_streams),
        unplaced=[_unplaced(channels) for channels in names],
        # swresample mixes no sound field down ("Input channel layout 'ambisonic 1' is not
        # supported"): Opus with mapping family 2, as 360° videos carry it.
        ambisonic=[bool(channels) and channels[0] == "AMBI0" for channels in names],
    )


def _channel_names(stream: av.audio.stream.AudioStream) -> list[str]:
    """The track's channels as FFmpeg names them ("FL", "FR"; "NONE" where the file says not).

    Read once, never through `codec_context.channels`: PyAV 17.1-18.1 wrap the codec context's
    layout in an AudioLayout that frees it when collected, and a layout in a custom order
    ("FR+FL+FC" in a MOV) owns a channel map the codec context frees too. That double free
    killed the process probing such an upload (the gateway, the converter). A layout that may
    own a map is therefore never freed, not even when the interpreter exits (an extra reference
    nobody drops): a few bytes for a rare file.
    """
    if stream.codec_context is None:  # no decoder for it (an unknown WAV format tag)
        return []
    layout = stream.codec_context.layout
    names = [channel.name for channel in layout.channels]
    if not _decodable(names):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(layout))
    return names


def _decodable(names: list[str]) -> bool:
    """The layout owns no channel map: unspecified, or in FFmpeg's native (ascending) order.

    Any other track is never decoded here either: each decoded frame's layout is freed twice
    the same way (a two-track MOV with one custom-order track aborted the probe).
    """
    if all(name == "NONE" for name in names):
        return True
    ids = [_NATIVE_CHANNEL_IDS.get(name, -1) for name in names]
    return min(ids) >= 0 and ids == sorted(set(ids))


def _unplaced(names: list[str]) -> bool:
    # Multitrack recorders and broadcast files carry 9, 16 or 32 discrete channels with no
    # layout; FFmpeg then refuses any downmix ("Rematrix is needed ... not enough information").
    unknown = [name == "NONE" for name in names]
    if not any(unknown):
        return False
    return not all(unknown) or len(unknown) > GUESSED_LAYOUT_MAX_CHANNELS


def _lowered(metadata: dict[str, str]) -> dict[str, str]:
    return {str(key).lower(): str(value) for key, value in metadata.items()}


def _activity(
    container: av.container.InputContainer,
    streams: Sequence[av.stream.Stream],
    decodable: Sequence[bool],
) -> list[TrackActivity]:
    """Packets and peak level in each audio track's first ACTIVITY_WINDOW_SECONDS.

    A track that cannot be decoded safely (see `_decodable`) counts as audible once it has
    packets: it may then become the default track, never the cause of a crash.
    """
    positions = {stream.index: position for position, stream in enumerate(streams)}
    packets = [0] * len(streams)
    peaks = [0.0] * len(streams)
    heard = [0.0] * len(streams)
    done: set[int] = set()
    resamplers = {index: av.AudioResampler(format="flt") for index in positions}
    read = 0
    deadline = time.monotonic() + ACTIVITY_MAX_SECONDS
    try:
        for packet in container.demux(*streams):
            position = positions.get(packet.stream.index)
            if position is None or position in done or packet.size == 0:
                continue
            read += packet.size
            if _past_window(packet) or heard[position] >= ACTIVITY_WINDOW_SECONDS:
                done.add(position)
            elif not decodable[position]:
                packets[position] += 1
                peaks[position] = max(peaks[position], AUDIBLE_PEAK)
            else:
                packets[position] += 1
                peak, seconds = _packet_peak(packet, resamplers)
                peaks[position] = max(peaks[position], peak)
                heard[position] += seconds
            if len(done) == len(streams) or read > ACTIVITY_MAX_BYTES:
                break
            if time.monotonic() > deadline:
                break
    except (av.error.FFmpegError, ValueError, IndexError):
        # A damaged stretch, a track changing its rate or channels mid-way (the resampler's
        # ValueError), or a stream appearing mid-file (PyAV's IndexError): judge the tracks by
        # what was read before it.
        pass
    return [TrackActivity(packets=n, peak=p) for n, p in zip(packets, peaks, strict=True)]


def _past_window(packet: av.Packet[Any]) -> bool:
    stream = packet.stream
    if packet.pts is None or stream.time_base is None:
        return False
    start = stream.start_time or 0
    return float((packet.pts - start) * stream.time_base) > ACTIVITY_WINDOW_SECONDS


def _packet_peak(
    packet: av.Packet[Any], resamplers: dict[int, av.AudioResampler]
) -> tuple[float, float]:
    """The packet's peak level, and the seconds of audio it decoded to."""
    peak = seconds = 0.0
    try:
        frames = packet.decode()
    except av.error.FFmpegError:
        return peak, seconds
    for frame in frames:
        if frame.sample_rate:  # type: ignore[attr-defined]
            seconds += frame.samples / frame.sample_rate  # type: ignore[attr-defined]
        for packed in resamplers[packet.stream.index].resample(frame):  # type: ignore[arg-type]
            samples = array("f", bytes(packed.planes[0]))
            if samples:
                peak = max(peak, max(samples), -min(samples))
    return peak, seconds


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
