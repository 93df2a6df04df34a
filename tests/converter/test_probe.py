from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from shared.media.libav.probe import demuxer_short_name
from tests.support.media import MediaFactory

# --- generators the shared MediaFactory does not have (used by test_ffmpeg.py too) ---


def two_track_mkv(media: MediaFactory) -> Path:
    """Matroska with an English stereo 440 Hz track and a French mono 880 Hz commentary."""
    return media.make(
        "two_tracks.mkv",
        [
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=4",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
            "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=22050:duration=4",
            "-map", "0:v", "-map", "1:a", "-map", "2:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a:0", "libopus", "-ac:a:0", "2",
            "-c:a:1", "aac", "-ac:a:1", "1",
            "-metadata", "title=Holiday",
            "-metadata:s:a:0", "language=eng",
            "-metadata:s:a:1", "language=fra",
            "-metadata:s:a:1", "title=Commentary",
        ],
    )  # fmt: skip


def faststart_mp4(media: MediaFactory, seconds: float = 10) -> Path:
    """The same H.264/AAC clip with its index (moov) moved before the media data."""
    source = media.h264_aac(seconds)
    return media.make(
        f"faststart_{seconds}s.mp4", ["-i", str(source), "-c", "copy", "-movflags", "+faststart"]
    )


def truncated_copy(source: Path, target: Path, fraction: float = 0.6) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def top_level_atoms(path: Path) -> list[str]:
    names: list[str] = []
    with path.open("rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            names.append(kind.decode("latin-1"))
            f.seek(size - 8, 1)
    return names


# --- tests ---


async def test_generated_mp4(media: MediaFactory, libav: MediaPool) -> None:
    info = await libav.probe(media.h264_aac(10))
    assert info.container == "mov,mp4,m4a,3gp,3g2,mj2"
    assert info.format_name == "mov"
    assert info.duration == pytest.approx(10, abs=0.1)
    assert info.video_codec == "h264"
    assert info.bitrate
    assert info.bitrate > 0
    [track] = info.audio_tracks
    assert (track.index, track.codec, track.channels, track.sample_rate) == (0, "aac", 2, 44100)
    assert track.language is None  # "und" is no language


async def test_bigbuckbunny_is_51_aac(shared_media: Path, libav: MediaPool) -> None:
    path = shared_media / "bigbuckbunny.mp4"
    info = await libav.probe(path)
    assert info.format_name == "mov"
    assert info.duration == pytest.approx(5.312, abs=0.05)
    assert info.video_codec == "h264"
    [track] = info.audio_tracks
    assert (track.codec, track.channels, track.sample_rate) == ("aac", 6, 48000)
    assert info.tags["major_brand"] == "isom"

    source = info.to_source_info(path.stat().st_size)
    assert source.size == path.stat().st_size
    assert source.container == info.container
    assert (source.audio_codec, source.channels, source.sample_rate) == ("aac", 6, 48000)
    assert source.duration == info.duration
    assert source.video_codec == "h264"
    assert len(source.audio_tracks) == 1


async def test_mpeg_ps_without_audio(shared_media: Path, libav: MediaPool) -> None:
    info = await libav.probe(shared_media / "cityCC0.mpg")
    assert info.format_name == "mpeg"
    assert info.audio_tracks == []
    assert info.video_codec == "mpeg2video"
    assert info.duration == pytest.approx(7.6, abs=0.2)
    source = info.to_source_info(1)
    assert source.audio_codec is None
    assert source.channels is None


async def test_mkv_with_two_audio_tracks(media: MediaFactory, libav: MediaPool) -> None:
    info = await libav.probe(two_track_mkv(media))
    assert info.container == "matroska,webm"
    assert info.format_name == "matroska"
    assert info.duration == pytest.approx(4, abs=0.1)
    assert info.tags.get("title") == "Holiday"
    first, second = info.audio_tracks
    assert (first.index, first.codec, first.channels, first.language) == (0, "opus", 2, "eng")
    assert (second.index, second.codec, second.channels, second.sample_rate) == (
        1,
        "aac",
        1,
        22050,
    )
    assert (second.language, second.title) == ("fra", "Commentary")


async def test_video_only_mp4_has_no_tracks(media: MediaFactory, libav: MediaPool) -> None:
    info = await libav.probe(media.video_only())
    assert info.audio_tracks == []
    assert info.video_codec == "h264"


async def test_audio_only_file(media: MediaFactory, libav: MediaPool) -> None:
    path = media.make(
        "tone.m4a",
        ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=32000:duration=2", "-c:a", "aac"],
    )
    info = await libav.probe(path)
    assert info.video_codec is None
    assert [t.sample_rate for t in info.audio_tracks] == [32000]


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is not a video\n",
        b"",
        bytes(range(256)) * 64,
        # A subtitle file opens fine in libavformat but holds neither audio nor video.
        b"1\n00:00:01,000 --> 00:00:02,000\nhello\n",
    ],
    ids=["text", "empty", "binary", "srt"],
)
async def test_non_media_is_unreadable(tmp_path: Path, content: bytes, libav: MediaPool) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError) as caught:
        await libav.probe(path)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert caught.value.detail == "the file could not be read as audio or video"


async def test_concat_script_pointing_at_another_file_is_refused(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    """A concat script would make the converter read files the user never uploaded."""
    other = media.h264_aac(10)
    (tmp_path / "other.mp4").symlink_to(other)
    script = tmp_path / "upload.mp4"
    script.write_text("ffconcat version 1.0\nfile other.mp4\n")
    with pytest.raises(MediaError) as caught:
        await libav.probe(script)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA


async def test_missing_file_is_not_the_users_fault(tmp_path: Path, libav: MediaPool) -> None:
    with pytest.raises(FileNotFoundError):
        await libav.probe(tmp_path / "gone.mp4")


async def test_truncated_mp4_with_index_at_end_is_unreadable(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(10)
    atoms = top_level_atoms(source)
    assert atoms.index("mdat") < atoms.index("moov"), atoms  # the premise: moov at the end
    cut = truncated_copy(source, tmp_path / "cut.mp4")
    with pytest.raises(MediaError) as caught:
        await libav.probe(cut)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA


async def test_truncated_faststart_mp4_still_probes(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    """Its index survives, so probing succeeds; conversion must fail (see test_ffmpeg.py)."""
    source = faststart_mp4(media)
    atoms = top_level_atoms(source)
    assert atoms.index("moov") < atoms.index("mdat"), atoms
    info = await libav.probe(truncated_copy(source, tmp_path / "cut.mp4"))
    assert info.duration == pytest.approx(10, abs=0.1)
    assert len(info.audio_tracks) == 1


async def test_hostile_name_is_only_a_file(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    path = tmp_path / "http:evil.example a.mp4 -i http:127.0.0.1:9 x.mp4"
    path.symlink_to(media.h264_aac(10))
    info = await libav.probe(path)
    assert info.format_name == "mov"


def test_short_name_resolves_to_the_same_demuxer() -> None:
    assert demuxer_short_name("mov,mp4,m4a,3gp,3g2,mj2", "QuickTime / MOV") == "mov"
    assert demuxer_short_name("matroska,webm", "Matroska / WebM") == "matroska"
    assert demuxer_short_name("mpeg", "MPEG-PS (MPEG-2 Program Stream)") == "mpeg"
    assert demuxer_short_name("nonexistent,avi", "AVI (Audio Video Interleaved)") == "avi"
