"""The conversion entry point on real files: formats, trim, loudness, cover, tags, fast path."""

from __future__ import annotations

from pathlib import Path

import av
import mutagen
import mutagen.flac
import mutagen.id3
import mutagen.mp4
import pytest

from services.converter.pipeline import convert
from shared.errors import MediaError
from shared.media import MediaPool
from shared.media.fit import check_options
from shared.options import OPTIONS_ERROR_CODE, ConversionOptions
from tests.converter.helpers import (
    FFMPEG,
    MP3_FRAME_SECONDS,
    apic_frames,
    flac_pictures,
    id3,
    integrated_loudness,
    mp4_tags,
    run_convert,
)
from tests.support.media import MediaFactory, decode

# --- formats ---


@pytest.mark.parametrize(
    ("fmt", "codec", "content_type", "sample_rate"),
    [
        ("mp3", "mp3", "audio/mpeg", 44100),
        ("m4a", "aac", "audio/mp4", 44100),
        ("opus", "opus", "audio/ogg", 48000),
        ("flac", "flac", "audio/flac", 44100),
        ("wav", "pcm_s16le", "audio/wav", 44100),
    ],
)
async def test_every_format_decodes_with_its_codec(
    media: MediaFactory,
    tmp_path: Path,
    fmt: str,
    codec: str,
    content_type: str,
    sample_rate: int,
    libav: MediaPool,
) -> None:
    form = {"format": fmt, "title": "Tone", "artist": "Lab", "year": "2024"}
    result = await run_convert(libav, media.h264_aac(3), tmp_path, form)

    assert result.output.name == f"output.{fmt}"
    assert (result.extension, result.content_type) == (fmt, content_type)
    decoded = decode(result.output)
    assert (decoded.codec, decoded.channels, decoded.sample_rate) == (codec, 2, sample_rate)
    assert decoded.duration == pytest.approx(3, abs=0.1)
    assert result.media.codec == codec
    info = result.to_output_info(result.output.stat().st_size, f"clip.{fmt}")
    assert (info.codec, info.content_type, info.filename) == (codec, content_type, f"clip.{fmt}")

    if fmt == "wav":
        # mutagen reads no RIFF INFO; libavformat maps INAM/IART/ICRD back to these names.
        with av.open(str(result.output)) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
        assert (tags["title"], tags["artist"], tags["date"]) == ("Tone", "Lab", "2024")
        return
    easy = mutagen.File(result.output, easy=True)
    assert easy is not None
    assert easy["title"] == ["Tone"]
    assert easy["artist"] == ["Lab"]
    assert easy["date"] == ["2024"]


async def test_mp3_bitrate_quality_rate_and_mono(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(4)
    cbr = await run_convert(
        libav, source, tmp_path / "cbr", {"bitrate": "96", "sample_rate": "48000"}
    )
    assert cbr.media.bitrate == pytest.approx(96_000, rel=0.05)
    assert decode(cbr.output).sample_rate == 48000

    mono = await run_convert(libav, source, tmp_path / "mono", {"channels": "1", "quality": "7"})
    assert decode(mono.output).channels == 1
    assert mono.media.bitrate is not None
    assert cbr.media.bitrate is not None
    assert mono.media.bitrate < cbr.media.bitrate


@pytest.mark.parametrize(("layout", "channels"), [("7.1", 8), ("5.1", 6)])
async def test_surround_is_downmixed(
    media: MediaFactory, tmp_path: Path, layout: str, channels: int, libav: MediaPool
) -> None:
    source = media.surround(layout)
    assert (await libav.probe(source)).audio_tracks[0].channels == channels
    stereo = await run_convert(libav, source, tmp_path / "stereo")
    assert decode(stereo.output).channels == 2
    mono = await run_convert(libav, source, tmp_path / "mono", {"channels": "1", "format": "flac"})
    assert decode(mono.output).channels == 1


# --- trim ---


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [("1.234", "3.5", 2.266), ("00:00:02.5", "0:07", 4.5), ("", "1.5", 1.5), ("8.25", "", 1.75)],
)
async def test_trim_lasts_end_minus_start_within_a_frame(
    media: MediaFactory, tmp_path: Path, start: str, end: str, expected: float, libav: MediaPool
) -> None:
    result = await run_convert(libav, media.h264_aac(10), tmp_path, {"start": start, "end": end})
    assert result.path == "encode"
    assert decode(result.output).duration == pytest.approx(expected, abs=MP3_FRAME_SECONDS)


async def test_trim_cuts_the_right_stretch(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    """Silence then a tone from 2 s: a clip from 2 s starts with sound, one to 2 s has none."""
    source = media.make(
        "silence_then_tone.flac",
        ["-f", "lavfi", "-i", "aevalsrc=if(gte(t\\,2)\\,0.5*sin(440*2*PI*t)\\,0):s=44100:d=4",
         "-c:a", "flac"],
    )  # fmt: skip
    head = await run_convert(libav, source, tmp_path / "head", {"end": "1.9", "format": "wav"})
    tail = await run_convert(libav, source, tmp_path / "tail", {"start": "2.1", "format": "wav"})
    assert integrated_loudness(head.output) < -60
    assert integrated_loudness(tail.output) > -20


async def test_trim_past_the_end_is_refused_before_ffmpeg(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(10)
    info = await libav.probe(source)
    options = ConversionOptions.from_form({"start": "5", "end": "30"})
    with pytest.raises(MediaError) as caught:
        check_options(info, options)
    assert caught.value.code == OPTIONS_ERROR_CODE
    assert caught.value.status_code == 422
    assert caught.value.detail == "end 30 s is past the end of the file (10.000 s)"
    with pytest.raises(MediaError):
        await convert(source, tmp_path, info, options, libav=libav, ffmpeg=FFMPEG, filename="a.mp4")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError, match="start 12 s is at or past the end"):
        check_options(info, ConversionOptions.from_form({"start": "12"}))


# --- loudness ---


@pytest.mark.parametrize(
    ("amplitude", "target"),
    [(0.02, "-14"), (0.9, "-14"), (0.05, "-23"), (0.5, "-30")],
    ids=["quiet-to-14", "loud-to-14", "quiet-to-23", "loud-to-30"],
)
async def test_normalise_lands_within_one_lu(
    media: MediaFactory, tmp_path: Path, amplitude: float, target: str, libav: MediaPool
) -> None:
    source = media.tone(6, amplitude, f"tone_{amplitude}.flac")
    before = integrated_loudness(source)
    result = await run_convert(
        libav, source, tmp_path, {"normalize": "true", "loudness_target": target}
    )
    assert result.measured_loudness == pytest.approx(before, abs=0.5)
    after = integrated_loudness(result.output)
    assert after == pytest.approx(float(target), abs=1.0)
    decoded = decode(result.output)
    assert decoded.sample_rate == 48000  # the source's rate, kept
    assert result.loudness is not None
    assert result.loudness.integrated_lufs == pytest.approx(after, abs=0.2)
    assert decoded.duration == pytest.approx(6, abs=0.1)


@pytest.mark.parametrize(
    ("form", "target"),
    [
        ({"start": "1", "end": "4.2"}, -14.0),
        # Far louder than the film's peaks allow: the limiter's loss is measured and made up.
        ({}, -9.0),
        ({"start": "2"}, -9.0),
    ],
    ids=["trimmed-3.2s", "whole-limited", "trimmed-limited"],
)
async def test_normalise_a_real_film_trimmed_or_limited(
    shared_media: Path, tmp_path: Path, form: dict[str, str], target: float, libav: MediaPool
) -> None:
    fields = {"normalize": "true", "loudness_target": f"{target:g}", **form}
    result = await run_convert(libav, shared_media / "bigbuckbunny.mp4", tmp_path, fields)
    after = integrated_loudness(result.output)
    assert after == pytest.approx(target, abs=1.0)
    assert result.loudness is not None
    assert result.loudness.integrated_lufs == pytest.approx(after, abs=0.2)
    assert result.loudness.true_peak_dbtp <= -0.5
    assert result.loudness_note is None


async def test_normalise_a_clip_under_3s_says_it_cannot_be_measured(
    shared_media: Path, tmp_path: Path, libav: MediaPool
) -> None:
    fields = {"normalize": "true", "loudness_target": "-14", "start": "1", "end": "3.5"}
    result = await run_convert(libav, shared_media / "bigbuckbunny.mp4", tmp_path, fields)
    assert result.loudness is None
    assert result.loudness_note is not None
    assert "shorter than 3 s" in result.loudness_note
    # loudnorm's pass made this -20.3 LUFS; the plain gain lands where it was asked.
    assert integrated_loudness(result.output) == pytest.approx(-14, abs=1.0)


async def test_normalise_silence_says_there_was_nothing_to_do(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    result = await run_convert(
        libav, media.tone(4, 0.0, "silence.flac"), tmp_path, {"normalize": "1"}
    )
    assert result.loudness is None
    assert result.loudness_note is not None
    assert "silent" in result.loudness_note


async def test_normalise_with_trim_and_progress_over_two_passes(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(20, size="64x64")
    info = await libav.probe(source)
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    options = ConversionOptions.from_form({"normalize": "on", "start": "2", "end": "18"})
    result = await convert(
        source,
        tmp_path,
        info,
        options,
        libav=libav,
        ffmpeg=FFMPEG,
        filename="a.mp4",
        on_progress=on_progress,
    )
    assert integrated_loudness(result.output) == pytest.approx(-14, abs=1.0)
    assert decode(result.output).duration == pytest.approx(16, abs=MP3_FRAME_SECONDS)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert all(0 <= f <= 1 for f in seen)
    assert seen[-1] == pytest.approx(1.0)
    assert any(0.4 <= f <= 0.5 for f in seen), seen  # the measuring pass ends at one half


async def test_normalising_silence_keeps_it_silent(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.tone(2, 0.0, "digital_silence.flac")
    result = await run_convert(libav, source, tmp_path, {"normalize": "1"})
    assert decode(result.output).duration == pytest.approx(2, abs=0.1)


# --- cover ---


async def test_cover_frame_in_mp3_m4a_and_flac(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(10, size="320x240")
    mp3 = await run_convert(libav, source, tmp_path / "mp3", {"cover": "frame"})
    [picture] = apic_frames(mp3.output)
    assert picture.type == mutagen.id3.PictureType.COVER_FRONT
    assert picture.mime == "image/jpeg"
    assert picture.data.startswith(b"\xff\xd8")
    assert decode(mp3.output).duration == pytest.approx(10, abs=0.15)

    m4a = await run_convert(libav, source, tmp_path / "m4a", {"cover": "frame", "format": "m4a"})
    covers = mp4_tags(m4a.output)["covr"]
    assert len(covers) == 1
    assert covers[0].imageformat == mutagen.mp4.MP4Cover.FORMAT_JPEG

    flac = await run_convert(libav, source, tmp_path / "flac", {"cover": "frame", "format": "flac"})
    [flac_picture] = flac_pictures(flac.output)
    assert (flac_picture.type, flac_picture.mime) == (3, "image/jpeg")


async def test_cover_frame_of_an_audio_only_file_is_skipped(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.tone(2, 0.3, "cover_less.flac")
    result = await run_convert(libav, source, tmp_path, {"cover": "frame"})
    assert not result.cover
    assert apic_frames(result.output) == []


async def test_no_cover_by_default(media: MediaFactory, tmp_path: Path, libav: MediaPool) -> None:
    result = await run_convert(libav, media.h264_aac(3), tmp_path)
    assert not result.cover
    assert apic_frames(result.output) == []


# --- tags ---


async def test_request_tags_win_over_source_tags_and_the_name(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.make(
        "tagged.mp3",
        ["-f", "lavfi", "-i", "sine=d=2", "-c:a", "libmp3lame",
         "-metadata", "title=Source Title", "-metadata", "artist=Source Artist",
         "-metadata", "album=Source Album", "-metadata", "date=1999-04-01",
         "-metadata", "genre=Jazz", "-metadata", "comment=gps 1,2"],
    )  # fmt: skip
    from_source = await run_convert(libav, source, tmp_path / "a", filename="upload.mp3")
    tags = id3(from_source.output)
    assert str(tags["TIT2"]) == "Source Title"
    assert str(tags["TPE1"]) == "Source Artist"
    assert str(tags["TALB"]) == "Source Album"
    assert str(tags["TDRC"]) == "1999"
    assert str(tags["TCON"]) == "Jazz"
    assert not tags.getall("COMM")  # nothing else of the source's metadata survives

    form = {"title": "Mine", "artist": "Me", "album": "Ours", "year": "2021", "genre": "Pop"}
    requested = await run_convert(libav, source, tmp_path / "b", form)
    tags = id3(requested.output)
    assert tags.version == (2, 4, 0)
    assert [str(tags[k]) for k in ("TIT2", "TPE1", "TALB", "TDRC", "TCON")] == [
        "Mine", "Me", "Ours", "2021", "Pop",
    ]  # fmt: skip


async def test_ogg_track_tags_are_the_works_tags(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.make(
        "tagged.ogg",
        ["-f", "lavfi", "-i", "sine=d=2", "-c:a", "libvorbis", "-metadata:s:a:0", "title=Song",
         "-metadata:s:a:0", "artist=Band"],
    )  # fmt: skip
    result = await run_convert(libav, source, tmp_path, filename="file.ogg")
    tags = id3(result.output)
    assert (str(tags["TIT2"]), str(tags["TPE1"])) == ("Song", "Band")


# --- the stream-copy fast path ---


async def test_fast_path_copies_mp3_from_avi(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.mp3_in_avi(4)
    result = await run_convert(libav, source, tmp_path, {"title": "Fast"}, filename="clip.avi")
    assert result.path == "copy"
    decoded = decode(result.output)
    assert (decoded.codec, decoded.channels, decoded.sample_rate) == ("mp3", 2, 44100)
    assert decoded.duration == pytest.approx(4, abs=0.1)
    assert result.media.bitrate == pytest.approx(128_000, rel=0.05)  # the source's, untouched
    tags = id3(result.output)
    assert (tags.version, str(tags["TIT2"])) == ((2, 4, 0), "Fast")


async def test_fast_path_keeps_a_cover(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    result = await run_convert(libav, media.mp3_in_avi(4), tmp_path, {"cover": "frame"})
    assert (result.path, result.cover) == ("copy", True)
    assert apic_frames(result.output)


@pytest.mark.parametrize(
    "form",
    [
        {"bitrate": "128"},
        {"quality": "2"},
        {"start": "1"},
        {"end": "3"},
        {"normalize": "true"},
        {"channels": "1"},
        {"sample_rate": "48000"},
        {"format": "m4a"},
    ],
    ids=lambda form: ",".join(f"{k}={v}" for k, v in form.items()),
)
async def test_fast_path_not_taken_when_the_request_changes_the_audio(
    media: MediaFactory, tmp_path: Path, form: dict[str, str], libav: MediaPool
) -> None:
    result = await run_convert(libav, media.mp3_in_avi(4), tmp_path, form)
    assert result.path == "encode"
    assert decode(result.output).duration > 0
