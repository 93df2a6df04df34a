"""The pure half of the media core: decisions and command lines, no FFmpeg run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.converter.loudness import Gain, Measurement, gain_for, parse_summary
from services.converter.plan import (
    ConversionPlan,
    build_cover_command,
    build_measure_command,
    build_output_command,
    plan_conversion,
)
from services.converter.tags import resolve_tags
from shared.errors import ErrorCode, MediaError
from shared.jobs import AudioTrack
from shared.media import MediaInfo, TrackActivity
from shared.media.fit import Limits, check_options
from shared.options import OPTIONS_ERROR_CODE, ConversionOptions

MIB = 1024 * 1024
SOURCE = Path("/data/in.avi")
OUTPUT = Path("/work/out.mp3")


def media(
    *tracks: tuple[str, int | None, int | None],
    duration: float | None = 60.0,
    has_video: bool = True,
    tags: dict[str, str] | None = None,
    track_tags: list[dict[str, str]] | None = None,
    activity: list[TrackActivity] | None = None,
) -> MediaInfo:
    return MediaInfo(
        container="avi",
        format_name="avi",
        duration=duration,
        bitrate=1_000_000,
        video_codec="mpeg4" if has_video else None,
        audio_tracks=[
            AudioTrack(index=i, codec=codec, channels=channels, sample_rate=rate)
            for i, (codec, channels, rate) in enumerate(tracks)
        ],
        tags=tags or {},
        track_tags=track_tags or [{} for _ in tracks],
        activity=activity or [],
        has_video=has_video,
    )


MP3_STEREO = media(("mp3", 2, 44100))
AAC_51 = media(("aac", 6, 48000))


def plan(info: MediaInfo, filename: str = "holiday clip.avi", **form: str) -> ConversionPlan:
    return plan_conversion(info, ConversionOptions.from_form(form), filename)


def value_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


# --- decisions ---


@pytest.mark.parametrize(
    ("info", "form", "path"),
    [
        (MP3_STEREO, {}, "copy"),
        (MP3_STEREO, {"title": "x", "cover": "frame", "channels": "2"}, "copy"),
        (MP3_STEREO, {"sample_rate": "44100"}, "copy"),  # what it already is
        (media(("mp3", 1, 22050)), {}, "copy"),  # mono stays mono: no change
        (MP3_STEREO, {"bitrate": "128"}, "encode"),
        (MP3_STEREO, {"quality": "2"}, "encode"),
        (MP3_STEREO, {"start": "1"}, "encode"),
        (MP3_STEREO, {"end": "10"}, "encode"),
        (MP3_STEREO, {"normalize": "true"}, "encode"),
        (MP3_STEREO, {"channels": "1"}, "encode"),
        (MP3_STEREO, {"sample_rate": "48000"}, "encode"),
        (MP3_STEREO, {"format": "wav"}, "encode"),
        (media(("mp3", None, 44100)), {}, "encode"),  # unknown layout: mixed to stereo
        (AAC_51, {}, "encode"),
    ],
)
def test_fast_path_only_when_nothing_changes(
    info: MediaInfo, form: dict[str, str], path: str
) -> None:
    assert plan(info, **form).path == path


def test_plan_settles_channels_rate_and_duration() -> None:
    decided = plan(AAC_51, start="10", end="00:00:40", sample_rate="44100")
    assert (decided.channels, decided.sample_rate) == (2, 44100)
    assert (decided.start, decided.end, decided.expected_duration) == (10, 40, 30)
    assert decided.passes == 1
    mono = plan(media(("aac", 1, 48000)), channels="1", sample_rate="48000")
    assert (mono.channels, mono.sample_rate) == (None, None)
    assert plan(media(("aac", 2, 44100)), format="opus").sample_rate == 48000


def test_end_at_the_reported_duration_means_the_end() -> None:
    decided = plan(MP3_STEREO, start="5", end="60.03")
    assert (decided.start, decided.end, decided.expected_duration) == (5, None, 55)


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"end": "61"}, "end 61 s is past the end of the file (60.000 s)"),
        ({"start": "60"}, "start 60 s is at or past the end of the file (60.000 s)"),
        ({"start": "1:00:00", "end": "2:00:00"},
         "start 3600 s is at or past the end of the file (60.000 s)"),
    ],
)  # fmt: skip
def test_trim_outside_the_file_is_an_options_error(form: dict[str, str], detail: str) -> None:
    options = ConversionOptions.from_form(form)
    for check in (
        lambda: check_options(MP3_STEREO, options),
        lambda: plan_conversion(MP3_STEREO, options, "a.avi"),
    ):
        with pytest.raises(MediaError) as caught:
            check()
        assert (caught.value.code, caught.value.detail) == (OPTIONS_ERROR_CODE, detail)


def test_trim_is_trusted_when_the_duration_is_unknown() -> None:
    decided = plan(media(("aac", 2, 44100), duration=None), end="100")
    assert (decided.end, decided.expected_duration) == (100, 100)


def test_track_choice() -> None:
    two = media(("aac", 2, 44100), ("aac", 1, 22050))
    assert plan(two).track == 0
    assert plan(two, audio_track="1").track == 1
    with pytest.raises(MediaError) as caught:
        plan(two, audio_track="2")
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
    with pytest.raises(MediaError) as caught:
        plan(media(), audio_track="0")
    assert caught.value.detail == "the file has no audio track"


@pytest.mark.parametrize(
    ("activity", "default"),
    [
        ([TrackActivity(0, 0.0), TrackActivity(50, 0.2)], 1),  # empty first
        ([TrackActivity(50, 0.0), TrackActivity(50, 0.2)], 1),  # silent first
        ([TrackActivity(50, 0.3), TrackActivity(50, 0.2)], 0),  # both fine: the first
        ([TrackActivity(0, 0.0), TrackActivity(50, 0.0)], 1),  # only silence: not empty
        ([TrackActivity(0, 0.0), TrackActivity(0, 0.0)], 0),  # nothing anywhere
    ],
)
def test_default_track_skips_empty_and_silent(activity: list[TrackActivity], default: int) -> None:
    info = media(("aac", 2, 44100), ("aac", 2, 44100), activity=activity)
    assert info.default_track == default
    assert plan(info).track == default
    assert plan(info, audio_track="0").track == 0  # an explicit choice is obeyed


def test_cover_only_from_a_real_video() -> None:
    assert plan(MP3_STEREO, cover="frame").cover_at == 6.0
    assert plan(media(("mp3", 2, 44100), has_video=False), cover="frame").cover_at is None
    assert plan(MP3_STEREO).cover_at is None


# --- tags ---


def test_tags_from_request_then_source_then_name() -> None:
    info = media(
        ("aac", 2, 44100),
        tags={"title": "Source", "artist": "Band\x00", "date": "2019-03-01", "genre": "Folk",
              "location": "+48.85+002.29/"},
    )  # fmt: skip
    options = ConversionOptions.from_form({"title": "Mine", "year": "2001"})
    assert resolve_tags(options, info, 0, "x.avi") == {
        "title": "Mine", "artist": "Band", "date": "2001", "genre": "Folk",
    }  # fmt: skip
    bare = media(("aac", 2, 44100))
    assert resolve_tags(ConversionOptions(), bare, 0, "my trip.final.mov") == {
        "title": "my trip.final"
    }


def test_track_tags_count_only_without_video() -> None:
    track_tags = [{"title": "Commentary", "artist": "Director"}]
    video = media(("aac", 2, 44100), track_tags=track_tags)
    assert resolve_tags(ConversionOptions(), video, 0, "film.mkv") == {"title": "film"}
    audio = media(("vorbis", 2, 44100), has_video=False, track_tags=track_tags)
    assert resolve_tags(ConversionOptions(), audio, 0, "a.ogg") == {
        "title": "Commentary", "artist": "Director",
    }  # fmt: skip


# --- commands ---


def test_copy_command() -> None:
    decided = plan(MP3_STEREO, title="Song")
    cmd = build_output_command("/usr/bin/ffmpeg", SOURCE, OUTPUT, MP3_STEREO, decided)
    assert cmd == [
        "/usr/bin/ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file", "-format_whitelist", "avi", "-f", "avi",
        "-max_pixels", "66355200",
        "-i", "file:/data/in.avi",
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-metadata", "title=Song",
        "-c:a", "copy",
        "-id3v2_version", "4", "-write_id3v1", "0",
        # 2 x 60 s + 60 s, at 60 kB/s + 8 MiB: a source lying about its length is cut short.
        "-t", "180.000", "-fs", str(180 * 60_000 + 8 * 1024 * 1024),
        "-progress", "pipe:1", "-nostats",
        "-f", "mp3", "file:/work/out.mp3",
    ]  # fmt: skip


def test_encode_command_with_everything() -> None:
    decided = plan(
        AAC_51, start="1.5", end="0:30", bitrate="192", sample_rate="44100", artist="A",
        year="1990", filename="x.mp4",
    )  # fmt: skip
    cover = Path("/work/cover.jpg")
    cmd = build_output_command("ffmpeg", SOURCE, OUTPUT, AAC_51, decided, cover=cover)
    assert cmd[cmd.index("-protocol_whitelist") : cmd.index("-i") + 2] == [
        "-protocol_whitelist", "file", "-format_whitelist", "avi", "-f", "avi",
        "-max_pixels", "66355200",
        "-ss", "1.500", "-to", "30.000",
        "-i", "file:/data/in.avi",
    ]  # fmt: skip
    assert cmd.count("-i") == 2
    assert value_after(cmd[cmd.index("-i") + 2 :], "-i") == "file:/work/cover.jpg"
    assert value_after(cmd[cmd.index("-i") + 2 :], "-f") == "jpeg_pipe"
    assert "-vn" not in cmd
    assert cmd[cmd.index("-map") : cmd.index("-map") + 4] == ["-map", "0:a:0", "-map", "1:v:0"]
    assert value_after(cmd, "-disposition:v:0") == "attached_pic"
    assert "comment=Cover (front)" in cmd
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-metadata"] == [
        "title=x", "artist=A", "date=1990",
    ]  # fmt: skip
    assert value_after(cmd, "-c:a") == "libmp3lame"
    assert value_after(cmd, "-b:a") == "192k"
    assert "-q:a" not in cmd
    assert (value_after(cmd, "-ac"), value_after(cmd, "-ar")) == ("2", "44100")


@pytest.mark.parametrize(
    ("fmt", "encoder", "muxer", "extra"),
    [
        ("mp3", "libmp3lame", "mp3", ["-q:a", "2"]),
        ("m4a", "aac", "ipod", ["-b:a", "192k"]),
        ("opus", "libopus", "opus", ["-b:a", "128k"]),
        ("flac", "flac", "flac", ["-sample_fmt", "s16"]),
        ("wav", "pcm_s16le", "wav", ["-rf64", "auto"]),
    ],
)
def test_encoders_and_muxers(fmt: str, encoder: str, muxer: str, extra: list[str]) -> None:
    info = media(("aac", 2, 48000))
    cmd = build_output_command("ffmpeg", SOURCE, OUTPUT, info, plan(info, format=fmt))
    assert value_after(cmd, "-c:a") == encoder
    assert cmd[-3:] == ["-f", muxer, "file:/work/out.mp3"]
    joined = " ".join(cmd)
    assert " ".join(extra) in joined


def test_hostile_names_stay_single_file_arguments() -> None:
    source = Path("dir") / "a.avi -i http:127.0.0.1:9 -f mp3"
    cmd = build_output_command("ffmpeg", source, OUTPUT, MP3_STEREO, plan(MP3_STEREO))
    assert cmd.count("-i") == 1
    assert value_after(cmd, "-i") == f"file:{source.resolve()}"
    cover = build_cover_command("ffmpeg", source, MP3_STEREO, 6.0, Path("c.jpg"))
    assert value_after(cover, "-i") == f"file:{source.resolve()}"
    assert value_after(cover, "-protocol_whitelist") == "file"


def test_cover_command_takes_one_scaled_frame() -> None:
    cmd = build_cover_command("ffmpeg", SOURCE, MP3_STEREO, 6.0, Path("/w/cover.jpg"))
    assert value_after(cmd, "-ss") == "6.000"
    assert cmd.index("-ss") < cmd.index("-i")
    assert value_after(cmd, "-map") == "0:V:0"  # capital V: never an attached picture
    assert value_after(cmd, "-frames:v") == "1"
    assert cmd[-3:] == ["-f", "mjpeg", "file:/w/cover.jpg"]


def test_measure_then_apply_use_the_same_signal() -> None:
    decided = plan(AAC_51, normalize="1", loudness_target="-16", start="2", channels="1")
    measure = build_measure_command("ffmpeg", SOURCE, AAC_51, decided)
    assert value_after(measure, "-loglevel") == "info"
    assert value_after(measure, "-ss") == "2.000"
    assert value_after(measure, "-af") == (
        "aresample=async=1:first_pts=0,"
        "aformat=channel_layouts=mono,ebur128=peak=true:framelog=quiet"
    )
    assert measure[-3:] == ["-f", "null", "-"]

    gain = gain_for(-16, Measurement(-27.3, -14.1))
    assert gain is not None
    assert gain.db == pytest.approx(11.3)
    assert not gain.limit
    apply = build_output_command("ffmpeg", SOURCE, OUTPUT, AAC_51, decided, gain=gain)
    assert value_after(apply, "-af") == (
        "aresample=async=1:first_pts=0,aformat=channel_layouts=mono,volume=11.30dB"
    )
    # A trial of a limited gain measures exactly what the output will get.
    loud = gain_for(-16, Measurement(-27.3, -3.0))
    assert loud is not None
    assert loud.limit
    trial = build_measure_command("ffmpeg", SOURCE, AAC_51, decided, loud)
    applied = build_output_command("ffmpeg", SOURCE, OUTPUT, AAC_51, decided, gain=loud)
    assert value_after(trial, "-af").startswith(value_after(applied, "-af") + ",ebur128")
    assert "alimiter=limit=0.8414:level=false:latency=true" in value_after(applied, "-af")
    assert gain_for(-16, Measurement(float("-inf"), float("-inf"))) is None
    quiet = build_output_command("ffmpeg", SOURCE, OUTPUT, AAC_51, decided, gain=None)
    assert value_after(quiet, "-af") == "aresample=async=1:first_pts=0,aformat=channel_layouts=mono"


EBUR128_STDERR = """\
[Parsed_ebur128_1 @ 0x7f26] t: 2.4 TARGET:-23 LUFS M: -30.1 S:-120.7 I: -33.0 LUFS
[Parsed_ebur128_1 @ 0x7f26] Summary:

  Integrated loudness:
    I:         -32.9 LUFS
    Threshold: -43.9 LUFS

  Loudness range:
    LRA:         0.0 LU
    Threshold:   0.0 LUFS

  True peak:
    Peak:      -10.7 dBFS
[out#0/null @ 0x55ec] video:0KiB audio:1406KiB
"""


def test_parse_summary() -> None:
    measured = parse_summary(EBUR128_STDERR)
    assert measured == Measurement(-32.9, -10.7)
    assert not measured.silent
    silent = parse_summary(
        EBUR128_STDERR.replace("-32.9 LUFS", "-70.0 LUFS").replace("-10.7 dBFS", "-inf dBFS")
    )
    assert silent.silent
    with pytest.raises(MediaError) as caught:
        parse_summary("I: -20.0 LUFS but no summary")
    assert caught.value.code is ErrorCode.CONVERSION_FAILED


def test_a_limited_gain_is_corrected_up_to_a_bound() -> None:
    measured = Measurement(-30.0, -5.0)
    assert gain_for(-14, measured) == Gain(16.0, limit=True)
    assert gain_for(-14, measured, correction=1.5) == Gain(17.5, limit=True)
    assert gain_for(-14, measured, correction=100) == Gain(40.0, limit=True)


def test_every_run_is_capped_by_the_sources_length_and_the_limit() -> None:
    assert AAC_51.duration is not None
    wav = plan(AAC_51, format="wav", channels="1", sample_rate="44100")
    cmd = build_output_command("ffmpeg", SOURCE, OUTPUT, AAC_51, wav)
    assert value_after(cmd, "-t") == f"{2 * AAC_51.duration + 60:.3f}"
    assert value_after(cmd, "-fs") == str(int(44100 * 4 * (2 * AAC_51.duration + 60)) + 8 * MIB)
    normalised = plan(AAC_51, normalize="1")
    measure = build_measure_command("ffmpeg", SOURCE, AAC_51, normalised)
    assert value_after(measure, "-t") == f"{2 * AAC_51.duration + 60:.3f}"
    unknown = replace(AAC_51, duration=None)
    decided = plan_conversion(unknown, ConversionOptions(), "a.mp4", Limits(600))
    assert decided.max_seconds == 660
    with pytest.raises(MediaError) as caught:
        plan_conversion(AAC_51, ConversionOptions(), "a.mp4", Limits(AAC_51.duration - 1))
    assert caught.value.code is ErrorCode.SOURCE_TOO_LONG
