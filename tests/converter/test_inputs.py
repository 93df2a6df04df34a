"""Whatever people upload: every container/codec pair FFmpeg reads, converted and decoded back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from tests.converter.helpers import apic_frames, id3, run_convert
from tests.converter.test_probe import two_track_mkv
from tests.support.media import MediaFactory, decode

H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "96k"]


@dataclass(frozen=True)
class Case:
    name: str
    """The generated file's name (its extension picks the muxer unless `fmt` is set)."""
    video: list[str] | None
    audio: list[str]
    source_codec: str
    fmt: str | None = None
    sample_rate: int = 44100
    channels: int = 2
    size: str = "96x64"
    seconds: float = 2.0


CASES = [
    Case("h264_aac.mp4", H264, AAC, "aac"),
    Case("h264_aac.mov", H264, AAC, "aac"),
    Case("h264_aac.m4v", H264, AAC, "aac", fmt="mp4"),
    Case("h264_ac3.mkv", H264, ["-c:a", "ac3"], "ac3", sample_rate=48000),
    Case("vp8_vorbis.webm", ["-c:v", "libvpx", "-deadline", "realtime"],
         ["-c:a", "libvorbis"], "vorbis", sample_rate=48000),
    Case("vp9_opus.webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
         ["-c:a", "libopus"], "opus", sample_rate=48000),
    Case("mpeg4_mp3.avi", ["-c:v", "mpeg4"], ["-c:a", "libmp3lame"], "mp3"),
    Case("flv1_mp3.flv", ["-c:v", "flv"], ["-c:a", "libmp3lame"], "mp3"),
    Case("h264_aac.ts", H264, AAC, "aac", sample_rate=48000),
    Case("mpeg1_mp2.mpg", ["-c:v", "mpeg1video", "-r", "25"], ["-c:a", "mp2"], "mp2",
         sample_rate=48000),
    Case("h263_amrnb.3gp", ["-c:v", "h263"], ["-c:a", "libopencore_amrnb", "-b:a", "12.2k"],
         "amr_nb", sample_rate=8000, channels=1, size="128x96"),
    Case("wmv2_wmav2.wmv", ["-c:v", "wmv2"], ["-c:a", "wmav2"], "wmav2", fmt="asf"),
    Case("theora_vorbis.ogv", ["-c:v", "libtheora"], ["-c:a", "libvorbis"], "vorbis"),
    Case("pcm.wav", None, ["-c:a", "pcm_s16le"], "pcm_s16le"),
    Case("lossless.flac", None, ["-c:a", "flac"], "flac", sample_rate=48000),
    Case("aac.m4a", None, AAC, "aac", fmt="ipod"),
    Case("lame.mp3", None, ["-c:a", "libmp3lame"], "mp3", channels=1),
    Case("vorbis.ogg", None, ["-c:a", "libvorbis"], "vorbis"),
    Case("opus.opus", None, ["-c:a", "libopus"], "opus", sample_rate=48000),
    # Variable frame rate: frames dropped irregularly, timestamps kept.
    Case("vfr.mp4", [*H264, "-vf", "select='lt(mod(n,7),3)+lt(n,5)'", "-fps_mode", "vfr"],
         AAC, "aac"),
    Case("short.mp4", H264, AAC, "aac", seconds=0.2),
    # Matroska bytes behind an .mp4 name: the probe's demuxer, not the name, decides.
    Case("matroska_named.mp4", H264, ["-c:a", "libvorbis"], "vorbis", fmt="matroska"),
]  # fmt: skip


def make(media: MediaFactory, case: Case) -> Path:
    return media.clip(
        case.name,
        video=case.video,
        audio=case.audio,
        seconds=case.seconds,
        fmt=case.fmt,
        sample_rate=case.sample_rate,
        channels=case.channels,
        size=case.size,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_every_input_becomes_a_decodable_mp3(
    media: MediaFactory, tmp_path: Path, case: Case, libav: MediaPool
) -> None:
    source = make(media, case)
    info = await libav.probe(source)
    assert info.audio_tracks[0].codec == case.source_codec
    assert info.has_video is (case.video is not None)

    result = await run_convert(libav, source, tmp_path, filename=f"My {case.name}")

    decoded = decode(result.output)
    assert decoded.codec == "mp3"
    assert decoded.channels == case.channels
    assert decoded.sample_rate == case.sample_rate
    # Codec priming and frame padding differ per codec; LAME's gapless info trims its own.
    assert decoded.duration == pytest.approx(case.seconds, abs=0.15)
    assert result.media.duration == pytest.approx(decoded.duration, abs=0.1)
    assert result.path == ("copy" if case.source_codec == "mp3" else "encode")

    tags = id3(result.output)
    assert tags.version == (2, 4, 0)
    assert str(tags["TIT2"]) == f"My {Path(case.name).stem}"


async def test_several_tracks_default_to_the_first_and_take_audio_track(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = two_track_mkv(media)
    first = await run_convert(libav, source, tmp_path / "first")
    assert first.track == 0
    assert (decode(first.output).channels, decode(first.output).sample_rate) == (2, 48000)

    second = await run_convert(libav, source, tmp_path / "second", {"audio_track": "1"})
    assert second.track == 1
    decoded = decode(second.output)
    assert (decoded.channels, decoded.sample_rate) == (1, 22050)
    assert decoded.duration == pytest.approx(4, abs=0.15)
    # The container's title is the work's; the track's "Commentary" is only the track's name.
    assert str(id3(second.output)["TIT2"]) == "Holiday"


async def test_a_missing_audio_track_is_named(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    with pytest.raises(MediaError) as caught:
        await run_convert(libav, two_track_mkv(media), tmp_path, {"audio_track": "5"})
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
    assert caught.value.detail == (
        "audio_track 5 does not exist: the file has 2 audio tracks (0 to 1)"
    )


@pytest.mark.parametrize("kind", ["empty", "silent"])
async def test_an_empty_or_silent_first_track_is_passed_over(
    media: MediaFactory, tmp_path: Path, kind: str, libav: MediaPool
) -> None:
    source = media.tracks_with_empty_or_silent_first(kind)
    info = await libav.probe(source)
    assert len(info.audio_tracks) == 2
    assert info.activity[0].empty is (kind == "empty")
    assert not info.activity[0].audible
    assert info.activity[1].audible
    assert info.default_track == 1

    result = await run_convert(libav, source, tmp_path)
    assert result.track == 1
    assert decode(result.output).duration == pytest.approx(3, abs=0.15)


async def test_asking_for_the_empty_track_fails_clearly(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.tracks_with_empty_or_silent_first("empty")
    with pytest.raises(MediaError) as caught:
        await run_convert(libav, source, tmp_path, {"audio_track": "0"})
    assert caught.value.code in (ErrorCode.NO_AUDIO_STREAM, ErrorCode.CONVERSION_FAILED)


async def test_real_bigbuckbunny(shared_media: Path, tmp_path: Path, libav: MediaPool) -> None:
    result = await run_convert(
        libav, shared_media / "bigbuckbunny.mp4", tmp_path, {"cover": "frame"}
    )
    decoded = decode(result.output)
    assert (decoded.codec, decoded.channels, decoded.sample_rate) == ("mp3", 2, 48000)
    assert decoded.duration == pytest.approx(5.312, abs=0.15)
    assert result.cover
    assert apic_frames(result.output)


async def test_real_video_without_audio(
    shared_media: Path, tmp_path: Path, libav: MediaPool
) -> None:
    with pytest.raises(MediaError) as caught:
        await run_convert(libav, shared_media / "cityCC0.mpg", tmp_path)
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
