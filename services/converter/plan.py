"""Decide how one job is converted, and spell out the FFmpeg commands for it (all pure).

`plan_conversion` checks the options against what the probe found and settles every choice
(track, trim, channels, rate, tags, stream copy or encode); the `*_command` builders turn a plan
into argv lists. Nothing here runs a process, so every decision is unit-tested directly.

Every command reads the upload the same guarded way: `-protocol_whitelist` with the one protocol
needed, `-f` pinned to the demuxer the probe saw, and the path as a single `file:` argument
(or `pipe:0`, when the converter pipes a blob in), never a shell line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.converter import loudness
from services.converter.loudness import Gain
from services.converter.tags import metadata_args, resolve_tags
from shared.media.fit import DEFAULT_MAX_SOURCE_SECONDS, Limits, check_source_length, trim
from shared.media.info import MAX_PIXELS, MediaInfo
from shared.options import OPUS_SAMPLE_RATE, ConversionOptions

ConversionPath = Literal["copy", "encode"]

Source = Path | Literal["stdin"]
"""A local file, or "stdin" when the converter writes the upload into FFmpeg's standard input."""
STDIN: Source = "stdin"

COVER_POSITION = 0.10
COVER_MAX_WIDTH = 640
MP3_CODEC = "mp3"
FALLBACK_SAMPLE_RATE = 48000

_ENCODERS = {
    "mp3": "libmp3lame",
    "m4a": "aac",
    "opus": "libopus",
    "flac": "flac",
    "wav": "pcm_s16le",
}
_MUXERS = {"mp3": "mp3", "m4a": "ipod", "opus": "opus", "flac": "flac", "wav": "wav"}

# An output may last twice what the probe promised plus a minute (an MP3 without a Xing header
# has an estimated duration) before it counts as a source that lied about its length.
OUTPUT_SECONDS_FACTOR = 2.0
OUTPUT_SECONDS_SLACK = 60.0
# Bytes per second no encoding of ours exceeds: 320 kb/s with room for the container (lossy),
# 32-bit samples (lossless); plus a cover picture and headers.
_LOSSY_BYTES_PER_SECOND = 60_000
_PCM_BYTES_PER_SAMPLE = 4
OUTPUT_BYTES_SLACK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ConversionPlan:
    track: int
    """Position among the source's audio streams."""
    path: ConversionPath
    format: str
    start: float | None
    end: float | None
    expected_duration: float | None
    """Seconds the output should last (trim applied); None when the source does not say."""
    channels: int | None
    """`-ac` for the output; None keeps the source's (mono or stereo) layout."""
    sample_rate: int | None
    """`-ar` for the output; None keeps the source's rate."""
    normalize: bool
    loudness_target: float
    vbr_quality: int | None
    bitrate: int | None
    source_sample_rate: int = FALLBACK_SAMPLE_RATE
    """The chosen track's rate (or FALLBACK_SAMPLE_RATE when unknown)."""
    tags: dict[str, str] = field(default_factory=dict)
    cover_at: float | None = None
    """Source position of the cover frame; None for no cover."""
    mix_from: int | None = None
    """Channels of a source FFmpeg cannot place on speakers, mixed down by equal weights."""
    from_sound_field: bool = False
    """An ambisonic source: its omnidirectional first channel (W) is the mix."""
    max_seconds: float = DEFAULT_MAX_SOURCE_SECONDS
    """`-t` of every decoding run: an output this long means the source lied about its length."""
    max_bytes: int | None = None
    """`-fs` of the written output."""

    @property
    def passes(self) -> int:
        return 2 if self.normalize else 1


def plan_conversion(
    info: MediaInfo, options: ConversionOptions, filename: str, limits: Limits | None = None
) -> ConversionPlan:
    """Every decision for one conversion; MediaError when the options do not fit the file."""
    limits = limits or Limits()
    check_source_length(info, limits)
    track = info.select_track(options.audio_track)
    start, end = trim(info, options)
    source = info.audio_tracks[track]
    channels = _output_channels(source.channels, options.channels)
    mix_from = source.channels if channels is not None and info.is_unplaced(track) else None
    from_sound_field = channels is not None and info.is_ambisonic(track)
    sample_rate = _output_sample_rate(source.sample_rate, options)
    copy = (
        options.format == "mp3"
        and source.codec == MP3_CODEC
        and not options.trims
        and not options.normalize
        and options.bitrate is None
        and options.quality is None
        and channels is None
        and sample_rate is None
    )
    expected = _expected_duration(info.duration, start, end)
    # Past the limit too: an honest source just under it must not reach its cap.
    max_seconds = limits.max_source_seconds + OUTPUT_SECONDS_SLACK
    if expected is not None:
        max_seconds = min(max_seconds, OUTPUT_SECONDS_FACTOR * expected + OUTPUT_SECONDS_SLACK)
    rate = sample_rate or source.sample_rate or FALLBACK_SAMPLE_RATE
    cover_at = None
    if options.cover == "frame" and info.has_video:
        cover_at = round((info.duration or 0.0) * COVER_POSITION, 3)
    return ConversionPlan(
        track=track,
        path="copy" if copy else "encode",
        format=options.format,
        start=start,
        end=end,
        expected_duration=expected,
        channels=channels,
        mix_from=mix_from,
        from_sound_field=from_sound_field,
        sample_rate=sample_rate,
        normalize=options.normalize,
        loudness_target=options.loudness_target,
        vbr_quality=options.vbr_quality,
        bitrate=options.target_bitrate,
        source_sample_rate=source.sample_rate or FALLBACK_SAMPLE_RATE,
        tags=resolve_tags(options, info, track, filename),
        cover_at=cover_at,
        max_seconds=round(max_seconds, 3),
        max_bytes=_max_bytes(options.format, max_seconds, rate, channels or 2),
    )


def _max_bytes(fmt: str, seconds: float, sample_rate: int, channels: int) -> int:
    if fmt in ("flac", "wav"):
        per_second = sample_rate * channels * _PCM_BYTES_PER_SAMPLE
    else:
        per_second = _LOSSY_BYTES_PER_SECOND
    return int(per_second * seconds) + OUTPUT_BYTES_SLACK


def _expected_duration(
    duration: float | None, start: float | None, end: float | None
) -> float | None:
    stop = end if end is not None else duration
    if stop is None:
        return None
    return max(0.0, stop - (start or 0.0))


def _output_channels(source: int | None, wanted: int) -> int | None:
    # `channels` is a ceiling: wider (5.1, 7.1) and unknown layouts are mixed down with
    # libswresample's standard matrix (centre and surrounds folded into left/right, LFE
    # dropped); a mono source is never upmixed.
    if source is None or source > wanted:
        return wanted
    return None


def _output_sample_rate(source: int | None, options: ConversionOptions) -> int | None:
    wanted = OPUS_SAMPLE_RATE if options.format == "opus" else options.sample_rate
    if wanted == "keep" or wanted == source:
        return None
    return wanted


# --- commands ---


def _head(ffmpeg: str, loglevel: str = "error") -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", loglevel, "-y"]


def _source_input(
    source: Source, info: MediaInfo, *, start: float | None = None, end: float | None = None
) -> list[str]:
    # Input-side `-ss`/`-to` seek fast and still cut sample-accurately when decoding
    # (FFmpeg trims the decoded frames); `-to` is a position in the source, not a length.
    trim: list[str] = []
    if start is not None:
        trim += ["-ss", f"{start:.3f}"]
    if end is not None:
        trim += ["-to", f"{end:.3f}"]
    protocol, url = ("pipe", "pipe:0") if source == STDIN else ("file", f"file:{_path(source)}")
    return [
        "-protocol_whitelist", protocol,
        # Nested demuxers inherit this list: a playlist smuggled inside the container (the
        # AVI GAB2 subtitle trick) cannot be opened as HLS or concat.
        "-format_whitelist", info.format_name,
        "-f", info.format_name,
        "-max_pixels", str(MAX_PIXELS),
        *trim,
        "-i", url,
    ]  # fmt: skip


def _path(source: Source) -> Path:
    assert isinstance(source, Path)
    return source.resolve()


def _progress() -> list[str]:
    return ["-progress", "pipe:1", "-nostats"]


# Audio that starts after the file does, or has holes in its timestamps, is filled with
# silence from time 0, as a player would play it: else the MP3 comes out shorter than the file
# and a trim lands seconds away from where it was asked (a 6 s file whose audio starts at 3 s
# became 3 s of MP3).
_ON_THE_TIMELINE = "aresample=async=1:first_pts=0"


def _pre_filters(plan: ConversionPlan) -> list[str]:
    """Timeline and channel mixing inside the graph, so measuring and applying see the same
    signal."""
    if plan.channels is None:
        return [_ON_THE_TIMELINE]
    layout = "mono" if plan.channels == 1 else "stereo"
    chain = [_ON_THE_TIMELINE]
    if plan.from_sound_field:
        chain.append("pan=" + "|".join([layout, *(f"c{out}=c0" for out in range(plan.channels))]))
    elif plan.mix_from:
        chain.append(_equal_mix(plan.mix_from, layout, plan.channels))
    return [*chain, f"aformat=channel_layouts={layout}"]


def _equal_mix(sources: int, layout: str, outputs: int) -> str:
    """Every source channel into every output channel, the gains summing to 1 (`<`).

    Channels nobody can place are usually separate microphones or stems, not speakers: each
    is kept, none can clip, and one voice among sixteen silent channels comes out quieter
    (`normalize` brings it back up).
    """
    every = "+".join(f"c{channel}" for channel in range(sources))
    return "pan=" + "|".join([layout, *(f"c{out}<{every}" for out in range(outputs))])


def build_measure_command(
    ffmpeg: str, source: Source, info: MediaInfo, plan: ConversionPlan, gain: Gain | None = None
) -> list[str]:
    """A loudness pass: decode the chosen (trimmed, mixed) audio, with `gain` applied as the
    output will have it, and print ebur128's summary."""
    chain = [*_pre_filters(plan), *(gain.filters() if gain else []), loudness.MEASURE_FILTER]
    return [
        # ebur128 prints its summary at the `info` level.
        *_head(ffmpeg, loglevel="info"),
        *_source_input(source, info, start=plan.start, end=plan.end),
        "-map", f"0:a:{plan.track}",
        "-vn", "-sn", "-dn",
        "-af", ",".join(chain),
        "-t", f"{plan.max_seconds:.3f}",
        *_progress(),
        "-f", "null", "-",
    ]  # fmt: skip


def build_cover_command(
    ffmpeg: str, source: Source, info: MediaInfo, at: float, output: Path
) -> list[str]:
    """One JPEG from the first real video stream (`V` skips attached pictures) at `at`."""
    return [
        *_head(ffmpeg),
        *_source_input(source, info, start=at),
        "-map", "0:V:0",
        "-frames:v", "1",
        "-an", "-sn", "-dn",
        "-vf", f"scale='min({COVER_MAX_WIDTH},iw)':-2",
        "-c:v", "mjpeg", "-q:v", "3",
        "-f", "mjpeg",
        f"file:{output.resolve()}",
    ]  # fmt: skip


def build_output_command(
    ffmpeg: str,
    source: Source,
    output: Path,
    info: MediaInfo,
    plan: ConversionPlan,
    *,
    gain: Gain | None = None,
    cover: Path | None = None,
) -> list[str]:
    """The run that writes the result: stream copy or encode, tags, optional cover.

    `output` should be a temporary path: some headers (Xing, moov) are written last, so a
    half-written file is never a valid result.
    """
    cover_input: list[str] = []
    cover_output: list[str] = []
    if cover is not None:
        cover_input = [
            "-protocol_whitelist", "file", "-f", "jpeg_pipe", "-i", f"file:{cover.resolve()}",
        ]  # fmt: skip
        cover_output = [
            "-map", "1:v:0",
            "-c:v", "copy",
            "-disposition:v:0", "attached_pic",
            "-metadata:s:v:0", "title=Cover",
            # ID3 APIC and FLAC PICTURE take the picture type from this comment.
            "-metadata:s:v:0", "comment=Cover (front)",
        ]  # fmt: skip
    return [
        *_head(ffmpeg),
        *_source_input(source, info, start=plan.start, end=plan.end),
        *cover_input,
        "-map", f"0:a:{plan.track}",
        *cover_output,
        *([] if cover is not None else ["-vn"]),
        "-sn", "-dn",
        # The source's tags and chapters may carry anything (GPS, device ids); start clean.
        "-map_metadata", "-1",
        "-map_chapters", "-1",
        *metadata_args(plan.tags),
        *(["-c:a", "copy"] if plan.path == "copy" else _encode_args(plan, gain)),
        *_muxer_args(plan.format),
        "-t", f"{plan.max_seconds:.3f}",
        *(["-fs", str(plan.max_bytes)] if plan.max_bytes is not None else []),
        *_progress(),
        "-f", _MUXERS[plan.format],
        f"file:{output.resolve()}",
    ]  # fmt: skip


def build_loudness_command(ffmpeg: str, output: Path) -> list[str]:
    """Measure what was written: ebur128's summary of the output's audio."""
    return [
        *_head(ffmpeg, loglevel="info"),
        "-protocol_whitelist", "file",
        "-i", f"file:{output.resolve()}",
        "-map", "0:a:0",
        "-vn", "-sn", "-dn",
        "-af", loudness.MEASURE_FILTER,
        "-f", "null", "-",
    ]  # fmt: skip


def _encode_args(plan: ConversionPlan, gain: Gain | None) -> list[str]:
    args: list[str] = []
    chain = _pre_filters(plan)
    if plan.normalize and gain is not None:
        chain += gain.filters()
    if chain:
        args += ["-af", ",".join(chain)]
    args += ["-c:a", _ENCODERS[plan.format]]
    if plan.format == "mp3":
        if plan.vbr_quality is not None:
            args += ["-q:a", str(plan.vbr_quality)]
        else:
            args += ["-b:a", f"{plan.bitrate}k"]
    elif plan.format in ("m4a", "opus"):
        args += ["-b:a", f"{plan.bitrate}k"]
    elif plan.format == "flac":
        # CD depth: decoders of lossy sources hand over floats, which would otherwise become
        # 32-bit FLAC twice the size for no audible gain.
        args += ["-sample_fmt", "s16"]
    if plan.channels is not None:
        args += ["-ac", str(plan.channels)]
    if plan.sample_rate is not None:
        args += ["-ar", str(plan.sample_rate)]
    return args


def _muxer_args(fmt: str) -> list[str]:
    if fmt == "mp3":
        return ["-id3v2_version", "4", "-write_id3v1", "0"]
    if fmt == "m4a":
        return ["-movflags", "+faststart"]
    if fmt == "wav":
        # Beyond 4 GiB a plain RIFF header overflows; RF64 only kicks in then.
        return ["-rf64", "auto"]
    return []
