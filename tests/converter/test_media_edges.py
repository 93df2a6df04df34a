"""Real-world oddities a review turned up: each converts correctly or fails with its own code.

Every input is generated with FFmpeg's lavfi sources; the conversion is the service's own.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from services.gateway.precheck import check_against_source
from shared.blobstore import FileBlobStore
from shared.errors import ErrorCode, MediaError
from shared.media import MediaPool
from shared.options import DEFAULT_LOUDNESS_TARGET, ConversionOptions
from tests.converter.helpers import FFMPEG, integrated_loudness, run_convert
from tests.support.media import MediaFactory, decode

VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=6"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


async def test_tags_in_latin_1_do_not_stop_a_conversion(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # RIFF INFO written by Windows tools: "Beyoncé" in Latin-1 (a lone 0xE9 byte). PyAV's
    # strict decoding failed the probe with UnicodeDecodeError: internal_error, or a 500.
    source = media.make(
        "latin1_tag.wav",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-c:a", "pcm_s16le", "-metadata", "artist=Beyonc\udce9",
        ],
    )  # fmt: skip
    info = await libav.probe(source)
    assert info.tags.get("artist", "").startswith("Beyonc")
    result = await run_convert(libav, source, tmp_path)
    assert result.media.duration == pytest.approx(2, abs=0.1)


async def test_a_very_short_output_is_read_as_what_it_is(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # The last 10 ms of a clip: a valid MP3 of a few frames, which FFmpeg's format guess took
    # for VVC video ("the converter produced no audio").
    source = media.make(
        "tiny_tail.mp4",
        [
            "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=15:duration=10",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=10",
            *H264, "-c:a", "aac", "-shortest",
        ],
    )  # fmt: skip
    result = await run_convert(libav, source, tmp_path, {"start": "9.99"})
    assert result.media.codec == "mp3"
    assert result.media.duration == pytest.approx(0.01, abs=0.04)


async def test_a_tag_saying_partial_file_is_not_a_truncated_file(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # The loudness pass runs at -loglevel info, which prints the input's tags among FFmpeg's
    # messages: the comment below failed the job as "incomplete or truncated".
    source = media.make(
        "partial_file_comment.mp4",
        [
            *VIDEO, "-f", "lavfi", "-i", "sine=frequency=440:duration=6", *H264,
            "-c:a", "aac", "-metadata", "comment=How to recover a partial file",
        ],
    )  # fmt: skip
    result = await run_convert(libav, source, tmp_path, {"normalize": "true"})
    assert decode(result.output).duration == pytest.approx(6, abs=0.15)


async def test_audio_that_starts_late_keeps_its_place_on_the_timeline(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # A 6 s video whose 3 s of audio start at 3 s: the MP3 was 3 s long, and a trim counted
    # from the first sample instead of from the start of the file.
    source = media.make(
        "late_audio.mkv",
        [
            *VIDEO, "-itsoffset", "3", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
            "-map", "0:v", "-map", "1:a", *H264, "-c:a", "aac",
        ],
    )  # fmt: skip
    info = await libav.probe(source)
    whole = await run_convert(libav, source, tmp_path / "whole")
    assert whole.media.duration == pytest.approx(info.duration, abs=0.15)
    trimmed = await run_convert(libav, source, tmp_path / "trimmed", {"start": "1", "end": "4"})
    assert trimmed.media.duration == pytest.approx(3, abs=0.15)


async def test_a_cut_off_matroska_file_fails_as_truncated(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # FFmpeg converts what is there and says "File ended prematurely": the job completed with
    # half of the audio.
    whole = media.make(
        "whole_opus.mkv",
        [*VIDEO, "-f", "lavfi", "-i", "sine=frequency=440:duration=6", *H264, "-c:a", "libopus"],
    )
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as caught:
        await run_convert(libav, cut, tmp_path / "work")
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA


async def test_choosing_a_track_of_a_file_without_sound_says_so(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    size = await store.write_file("silent-src", media.video_only(2))
    with pytest.raises(MediaError) as caught:
        await check_against_source(
            libav, store, "silent-src", size, ConversionOptions.from_form({"audio_track": "0"})
        )
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM


def _unlabelled(channels: int, *, tone_at: tuple[int, int]) -> list[str]:
    """`channels` discrete channels, 440 Hz and 1 kHz at the two positions given and silence in
    the rest (a multitrack recorder's file with two live microphones). Into Matroska, which
    records no layout for PCM."""
    first, second = tone_at
    inputs = [
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100:duration=4",
    ]  # fmt: skip
    order = []
    for position in range(channels):
        if position == first:
            order.append("[0:a]")
        elif position == second:
            order.append("[1:a]")
        else:
            inputs += ["-f", "lavfi", "-i", "anullsrc=channel_layout=mono:sample_rate=44100"]
            order.append(f"[{len(inputs) // 4 - 1}:a]")
    graph = f"{''.join(order)}amerge=inputs={channels}"
    return [*inputs, "-filter_complex", graph, "-t", "4", "-c:a", "pcm_s16le"]


def tone_level(path: Path, channel: int, frequency: int) -> float:
    """Mean level in dB of one channel of `path` around `frequency` (a narrow band-pass)."""
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostats", "-i", str(path), "-af",
         f"pan=mono|c0=c{channel},bandpass=f={frequency}:width_type=q:w=20,volumedetect",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = re.search(r"mean_volume: (-?[\d.]+) dB", done.stderr)
    assert found, done.stderr[-2000:]
    return float(found.group(1))


@pytest.mark.parametrize("channels", [9, 32])
async def test_channels_with_no_layout_to_guess_are_mixed_with_equal_weights(
    media: MediaFactory, tmp_path: Path, channels: int, libav: MediaPool
) -> None:
    # Nine or more channels that name no speakers (FFmpeg guesses layouts only up to 8): every
    # downmix failed with "Rematrix is needed ... not enough information": conversion_failed.
    source = media.make(
        f"unlabelled_{channels}.mkv", _unlabelled(channels, tone_at=(0, channels - 1))
    )
    info = await libav.probe(source)
    assert info.audio_tracks[0].channels == channels
    assert info.unplaced == [True]
    result = await run_convert(libav, source, tmp_path / "stereo")
    assert decode(result.output).channels == 2
    assert result.media.duration == pytest.approx(4, abs=0.1)
    alone = tone_level(media.make("tone_440.wav", [*_unlabelled(2, tone_at=(0, 1))]), 0, 440)
    for side in (0, 1):
        # Both microphones reach both sides, each at 1/channels of its level: nothing clips.
        for frequency in (440, 1000):
            level = tone_level(result.output, side, frequency)
            assert level == pytest.approx(alone - 20 * math.log10(channels), abs=2)
    mono = await run_convert(libav, source, tmp_path / "mono", {"channels": "1"})
    assert decode(mono.output).channels == 1
    louder = await run_convert(libav, source, tmp_path / "normalized", {"normalize": "1"})
    assert integrated_loudness(louder.output) == pytest.approx(DEFAULT_LOUDNESS_TARGET, abs=1.5)


async def test_up_to_eight_channels_with_no_layout_keep_ffmpegs_standard_guess(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # Six unlabelled channels are 5.1 to every tool: the centre (third) channel is mixed into
    # both sides, the LFE (fourth) is dropped, as for a labelled 5.1 source.
    source = media.make("unlabelled_6.mkv", _unlabelled(6, tone_at=(2, 3)))
    info = await libav.probe(source)
    assert info.unplaced == [False]
    result = await run_convert(libav, source, tmp_path)
    centre = [tone_level(result.output, side, 440) for side in (0, 1)]
    lfe = [tone_level(result.output, side, 1000) for side in (0, 1)]
    assert centre[0] == pytest.approx(centre[1], abs=0.5)
    assert max(lfe) < min(centre) - 30


PROBE_IN_A_CHILD = """
import asyncio, sys
from pathlib import Path
from shared.media import MediaPool
pool = MediaPool()
info = asyncio.run(pool.probe(Path(sys.argv[1])))
pool.close()
print(info.audio_tracks[0].channels, info.unplaced)
"""


def _probed_in_a_child(source: Path) -> subprocess.CompletedProcess[str]:
    # In a child, so that a native crash fails the test instead of ending the test run.
    return subprocess.run(
        [sys.executable, "-c", PROBE_IN_A_CHILD, str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_channels_in_a_custom_order_neither_crash_the_probe_nor_the_conversion(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # PyAV 17.1-18.1 freed such a layout twice: reading the channels of this MOV killed the
    # process (the gateway's upload check, the converter) with "double free or corruption".
    source = media.make(
        "custom_order.mov",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000:duration=3",
            "-filter_complex", "[0:a][1:a][2:a]amerge=inputs=3,channelmap=channel_layout=FR+FL+FC",
            "-c:a", "pcm_s16le",
        ],
    )  # fmt: skip
    child = _probed_in_a_child(source)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == ["3", "[False]"]
    result = await run_convert(libav, source, tmp_path)
    assert decode(result.output).channels == 2
    assert result.media.duration == pytest.approx(3, abs=0.1)


async def test_a_sound_field_is_heard_through_its_omnidirectional_channel(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # First-order ambisonics (Opus, mapping family 2, as 360° videos carry it): swresample mixes
    # no sound field down, and every conversion failed ("'ambisonic 1' is not supported").
    source = media.make(
        "ambisonic.webm",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000:duration=4",
            "-filter_complex", "[1:a]asplit=3[x][y][z];[0:a][x][y][z]amerge=inputs=4",
            "-c:a", "libopus", "-mapping_family", "2",
        ],
    )  # fmt: skip
    info = await libav.probe(source)
    assert info.ambisonic == [True]
    result = await run_convert(libav, source, tmp_path)
    assert decode(result.output).channels == 2
    assert result.media.duration == pytest.approx(4, abs=0.1)
    alone = tone_level(media.make("tone_440.wav", [*_unlabelled(2, tone_at=(0, 1))]), 0, 440)
    for side in (0, 1):
        # W alone, at its own level; the directional channels (1 kHz) are left out.
        assert tone_level(result.output, side, 440) == pytest.approx(alone, abs=2)
        assert tone_level(result.output, side, 1000) < alone - 30


async def test_a_second_track_in_a_custom_order_is_not_decoded_to_pick_the_default(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # Found by fuzzing: with two tracks the probe decodes their opening seconds to pick the
    # default one, and each decoded frame of a custom-order track was freed twice (SIGABRT).
    source = media.make(
        "two_tracks_custom_order.mov",
        [
            "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:d=2",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=2",
            "-filter_complex",
            "[1:a]asplit=3[a][b][c];[a][b][c]amerge=inputs=3,"
            "channelmap=channel_layout=FR+FL+FC[custom]",
            "-map", "0:a", "-map", "[custom]", "-c:a", "pcm_s16le",
        ],
    )  # fmt: skip
    child = _probed_in_a_child(source)
    assert child.returncode == 0, child.stderr[-2000:]
    info = await libav.probe(source)
    assert info.default_track == 1  # the silent first track is passed over, as before
    result = await run_convert(libav, source, tmp_path)
    assert result.media.duration == pytest.approx(2, abs=0.1)


async def test_a_track_no_decoder_knows_is_described_not_a_crash(
    tmp_path: Path, libav: MediaPool
) -> None:
    # A WAV whose format tag no decoder claims: PyAV gives its stream no codec context, and the
    # probe raised AttributeError (a 500 at the upload check, an internal error on the job).
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 8000, 16000, 2, 16)
    data = bytes(64)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    riff += b"data" + struct.pack("<I", len(data)) + data
    source = tmp_path / "unknown_codec.wav"
    source.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    info = await libav.probe(source)
    assert [(t.codec, t.channels, t.sample_rate) for t in info.audio_tracks] == [(None, None, None)]


async def test_tracks_that_change_rate_or_gain_streams_midway_are_judged_by_their_start(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # Found by fuzzing, two more ways out of the probe besides MediaError: a track whose rate
    # changes midway (the resampler's ValueError) and an MPEG-TS whose second half brings a new
    # program (PyAV's IndexError from its demuxer).
    first = media.make(
        "rate_44k.mp3", ["-f", "lavfi", "-i", "sine=r=44100:d=1", "-c:a", "libmp3lame"]
    )
    second = media.make(
        "rate_22k.mp3", ["-f", "lavfi", "-i", "sine=r=22050:d=1", "-c:a", "libmp3lame"]
    )
    joined = tmp_path / "rate_change.mp3"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    changing = media.make(
        "rate_change_two_tracks.mkv",
        ["-i", str(joined), "-f", "lavfi", "-i", "sine=r=8000:d=2",
         "-map", "0:a", "-map", "1:a", "-c:a:0", "copy", "-c:a:1", "pcm_s16le"],
    )  # fmt: skip
    program_a = media.make(
        "program_a.ts",
        ["-f", "lavfi", "-i", "sine=f=440:d=3", "-f", "lavfi", "-i", "sine=f=880:d=3",
         "-map", "0:a", "-map", "1:a", "-c:a", "mp2"],
    )  # fmt: skip
    program_b = media.make(
        "program_b.ts",
        ["-f", "lavfi", "-i", "sine=f=660:d=3", "-c:a", "mp2",
         "-mpegts_start_pid", "0x200", "-mpegts_service_id", "2"],
    )  # fmt: skip
    late = tmp_path / "late_program.ts"
    late.write_bytes(program_a.read_bytes() + program_b.read_bytes())
    for source in (changing, late):
        child = _probed_in_a_child(source)
        assert child.returncode == 0, child.stderr[-2000:]
        assert len((await libav.probe(source)).audio_tracks) >= 2
