from __future__ import annotations

import asyncio
import time
from array import array
from pathlib import Path

import av
import pytest

from services.converter.ffmpeg import (
    FFmpegFailed,
    build_mp3_command,
    convert_to_mp3,
    describe_failure,
    inspect_output,
    run_ffmpeg,
    timeout_for,
)
from services.converter.probe import MediaInfo, probe
from shared.errors import ErrorCode, MediaError
from shared.ffmpeg_path import ffmpeg_executable
from shared.jobs import AudioTrack
from tests.converter.test_probe import faststart_mp4, truncated_copy, two_track_mkv
from tests.support.media import MediaFactory, decode

FFMPEG = ffmpeg_executable()


def info_with(*channels: int | None, format_name: str = "mov") -> MediaInfo:
    return MediaInfo(
        container="mov,mp4,m4a,3gp,3g2,mj2",
        format_name=format_name,
        duration=10.0,
        bitrate=1_000_000,
        video_codec="h264",
        audio_tracks=[AudioTrack(index=i, codec="aac", channels=c) for i, c in enumerate(channels)],
    )


def long_clip(media: MediaFactory) -> Path:
    """Ten minutes at 64x64: converting it takes a few seconds, enough to interrupt."""
    return media.h264_aac(600, size="64x64")


def pids_running(marker: str) -> list[int]:
    """Processes whose command line mentions `marker` (psutil is not installed)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def process_exists(pid: int) -> bool:
    """True for a live process or an unreaped zombie: both count as left behind."""
    return Path(f"/proc/{pid}").exists()


def channel_rms(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sums = [0.0] * stream.codec_context.channels
        count = 0
        for frame in container.decode(stream):
            assert frame.format.name == "fltp", frame.format.name
            for channel, plane in enumerate(frame.planes):
                samples = array("f", bytes(plane))[: frame.samples]
                sums[channel] += sum(x * x for x in samples)
            count += frame.samples
    return [(s / count) ** 0.5 for s in sums]


# --- the command (pure) ---


def test_command_for_a_stereo_source(tmp_path: Path) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "out.mp3.part"
    cmd = build_mp3_command("/usr/bin/ffmpeg", source, output, info_with(2))
    assert cmd == [
        "/usr/bin/ffmpeg",
        "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file",
        "-format_whitelist", "mov",
        "-f", "mov",
        "-i", f"file:{source}",
        "-map", "0:a:0",
        "-vn", "-sn", "-dn",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-c:a", "libmp3lame", "-q:a", "2",
        "-progress", "pipe:1", "-nostats",
        "-f", "mp3",
        f"file:{output}",
    ]  # fmt: skip


def test_command_downmixes_surround_and_unknown_layouts(tmp_path: Path) -> None:
    for channels in (6, 8, None):
        cmd = build_mp3_command(FFMPEG, tmp_path / "a", tmp_path / "b", info_with(channels))
        assert cmd[cmd.index("-ac") + 1] == "2"
    for channels in (1, 2):
        cmd = build_mp3_command(FFMPEG, tmp_path / "a", tmp_path / "b", info_with(channels))
        assert "-ac" not in cmd


def test_command_picks_the_track_quality_and_title(tmp_path: Path) -> None:
    info = info_with(2, 6, format_name="matroska")
    cmd = build_mp3_command(
        FFMPEG, tmp_path / "a", tmp_path / "b", info, track=1, quality=5, title="Talk"
    )
    assert cmd[cmd.index("-map") + 1] == "0:a:1"
    assert cmd[cmd.index("-f") + 1] == "matroska"
    assert cmd[cmd.index("-q:a") + 1] == "5"
    assert cmd[cmd.index("-ac") + 1] == "2"  # the chosen track's channels count
    assert cmd[cmd.index("-metadata") + 1] == "title=Talk"


def test_command_keeps_a_hostile_name_in_one_argument(tmp_path: Path) -> None:
    source = Path("relative dir") / "a.mp4 -i http:127.0.0.1:9 -f mp3"
    cmd = build_mp3_command(FFMPEG, source, tmp_path / "b", info_with(2))
    assert cmd.count("-i") == 1
    assert cmd[cmd.index("-i") + 1] == f"file:{source.resolve()}"
    assert Path(cmd[cmd.index("-i") + 1].removeprefix("file:")).is_absolute()


def test_command_rejects_missing_tracks_and_bad_quality(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(MediaError) as caught:
        build_mp3_command(FFMPEG, a, b, info_with())
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
    with pytest.raises(MediaError) as caught:
        build_mp3_command(FFMPEG, a, b, info_with(2), track=1)
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
    with pytest.raises(ValueError, match="quality"):
        build_mp3_command(FFMPEG, a, b, info_with(2), quality=10)


def test_timeout_scales_with_duration_and_is_bounded() -> None:
    assert timeout_for(None) == 3600
    assert timeout_for(0) == 3600
    assert timeout_for(10) == 80
    assert timeout_for(600) == 1260
    assert timeout_for(10 * 24 * 3600) == 4 * 3600


@pytest.mark.parametrize(
    ("stderr", "returncode", "code", "detail"),
    [
        (
            "[in#0 @ 0x1] moov atom not found\n"
            "[in#0 @ 0x1] Error opening input: Invalid data found when processing input\n",
            183,
            ErrorCode.UNREADABLE_MEDIA,
            "the file is incomplete or truncated",
        ),
        (
            "Error opening input: Invalid data found when processing input\n",
            183,
            ErrorCode.UNREADABLE_MEDIA,
            "the file could not be read as audio or video",
        ),
        (
            "[in#0/mov,mp4 @ 0x1] stream 1, offset 0x9dc93: partial file\n",
            0,
            ErrorCode.UNREADABLE_MEDIA,
            "the file is incomplete or truncated",
        ),
        (
            "Stream map '0:a:3' matches no streams.\n",
            234,
            ErrorCode.NO_AUDIO_STREAM,
            "the selected audio track does not exist",
        ),
        (
            "[out#0/mp3 @ 0x1] Error writing trailer: No space left on device\n",
            228,
            ErrorCode.CONVERSION_FAILED,
            "the converter ran out of disk space",
        ),
        ("", -9, ErrorCode.CONVERSION_FAILED, "ffmpeg was stopped by signal 9"),
        (
            "[aist#0:1/aac @ 0x2] Something odd happened\nConversion failed!\n",
            1,
            ErrorCode.CONVERSION_FAILED,
            "ffmpeg failed: Something odd happened",
        ),
        ("", 1, ErrorCode.CONVERSION_FAILED, "ffmpeg failed (exit code 1)"),
    ],
)
def test_failures_get_a_code_and_a_short_reason(
    stderr: str, returncode: int, code: ErrorCode, detail: str
) -> None:
    assert describe_failure(stderr, returncode) == (code, detail)


# --- real conversions ---


async def test_converts_the_10s_clip(media: MediaFactory, tmp_path: Path) -> None:
    source = media.h264_aac(10)
    info = await probe(source)
    output = tmp_path / "out.mp3.part"
    result = await convert_to_mp3(source, output, info, ffmpeg=FFMPEG)

    decoded = decode(output)
    assert decoded.codec.startswith("mp3")
    assert decoded.channels == 2
    assert decoded.sample_rate == 44100
    assert decoded.duration == pytest.approx(10, abs=0.15)

    assert result.codec == "mp3"
    assert result.channels == 2
    assert result.sample_rate == 44100
    assert result.duration == pytest.approx(decoded.duration, abs=0.05)
    assert result.bitrate
    assert 8_000 < result.bitrate < 320_000

    described = await inspect_output(output)
    assert described == result
    view = result.to_output_info(output.stat().st_size, "clip.mp3")
    assert (view.codec, view.channels, view.filename) == ("mp3", 2, "clip.mp3")
    assert view.content_type == "audio/mpeg"


async def test_converts_bigbuckbunny_51_to_stereo(shared_media: Path, tmp_path: Path) -> None:
    source = shared_media / "bigbuckbunny.mp4"
    info = await probe(source)
    output = tmp_path / "bunny.mp3"
    result = await convert_to_mp3(source, output, info, ffmpeg=FFMPEG)
    decoded = decode(output)
    assert decoded.channels == 2
    assert decoded.sample_rate == 48000
    assert decoded.duration == pytest.approx(5.312, abs=0.15)
    assert result.channels == 2
    # Real music at -q:a 2 lands near LAME's ~190 kbit/s VBR target.
    assert result.bitrate
    assert 120_000 < result.bitrate < 260_000
    left, right = channel_rms(output)
    assert left > 0.01
    assert right > 0.01


async def test_51_downmix_puts_each_channel_where_it_belongs(
    media: MediaFactory, tmp_path: Path
) -> None:
    """Front-left only reaches the left; the centre reaches both sides equally."""
    tone = "0.5*sin(440*2*PI*t)"
    layouts = {
        "front_left": f"{tone}|0|0|0|0|0",
        "centre": f"0|0|{tone}|0|0|0",
        "surround_right": f"0|0|0|0|0|{tone}",
    }
    rms: dict[str, list[float]] = {}
    for name, exprs in layouts.items():
        source = media.make(
            f"surround_{name}.mp4",
            [
                "-f", "lavfi",
                "-i", f"aevalsrc=exprs={exprs}:channel_layout=5.1:sample_rate=48000:duration=2",
                "-c:a", "aac", "-b:a", "384k",
            ],
        )  # fmt: skip
        info = await probe(source)
        assert info.audio_tracks[0].channels == 6
        output = tmp_path / f"{name}.mp3"
        await convert_to_mp3(source, output, info, ffmpeg=FFMPEG)
        rms[name] = channel_rms(output)

    left, right = rms["front_left"]
    assert left > 0.1
    assert right < left / 20
    left, right = rms["centre"]
    assert left > 0.05
    assert left == pytest.approx(right, rel=0.1)
    left, right = rms["surround_right"]
    assert right > 0.05
    assert left < right / 20


async def test_converts_the_second_track_only(media: MediaFactory, tmp_path: Path) -> None:
    source = two_track_mkv(media)
    info = await probe(source)
    output = tmp_path / "commentary.mp3"
    result = await convert_to_mp3(source, output, info, ffmpeg=FFMPEG, track=1)
    decoded = decode(output)
    assert (decoded.channels, decoded.sample_rate) == (1, 22050)
    assert decoded.duration == pytest.approx(4, abs=0.15)
    assert result.channels == 1


async def test_hostile_file_name_converts_as_a_file(media: MediaFactory, tmp_path: Path) -> None:
    source = tmp_path / "my clip -i http:127.0.0.1:9 -f mp3 x.mp4"
    source.symlink_to(media.h264_aac(10))
    output = tmp_path / "out -y file:elsewhere.mp3"
    info = await probe(source)
    await convert_to_mp3(source, output, info, ffmpeg=FFMPEG)
    assert decode(output).duration == pytest.approx(10, abs=0.15)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, output.name])


async def test_progress_is_monotonic_and_reaches_the_end(
    media: MediaFactory, tmp_path: Path
) -> None:
    source = long_clip(media)
    info = await probe(source)
    seen: list[float] = []

    async def on_progress(seconds: float) -> None:
        seen.append(seconds)

    output = tmp_path / "long.mp3"
    cmd = build_mp3_command(FFMPEG, source, output, info)
    await run_ffmpeg(cmd, duration=info.duration, on_progress=on_progress, timeout=120)
    assert len(seen) >= 2, seen
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert info.duration is not None
    assert seen[-1] == pytest.approx(info.duration, abs=1)
    assert all(0 <= s <= info.duration for s in seen)


async def test_timeout_kills_ffmpeg(media: MediaFactory, tmp_path: Path) -> None:
    source = long_clip(media)
    info = await probe(source)
    output = tmp_path / "timeout-marker.mp3"
    pids: list[int] = []

    async def on_progress(seconds: float) -> None:
        pids.extend(pids_running(str(output)))

    cmd = build_mp3_command(FFMPEG, source, output, info)
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await run_ffmpeg(cmd, duration=info.duration, on_progress=on_progress, timeout=1.5)
    assert time.monotonic() - started < 5
    assert caught.value.code is ErrorCode.TIMEOUT
    assert caught.value.detail == "conversion took too long"
    assert pids, "ffmpeg never reported progress before the timeout"
    assert not any(process_exists(pid) for pid in pids)
    assert pids_running(str(output)) == []


async def test_cancellation_kills_ffmpeg(media: MediaFactory, tmp_path: Path) -> None:
    source = long_clip(media)
    info = await probe(source)
    output = tmp_path / "cancel-marker.mp3"
    running = asyncio.Event()
    pids: list[int] = []

    async def on_progress(seconds: float) -> None:
        if not pids:
            pids.extend(pids_running(str(output)))
        running.set()

    cmd = build_mp3_command(FFMPEG, source, output, info)
    task = asyncio.create_task(
        run_ffmpeg(cmd, duration=info.duration, on_progress=on_progress, timeout=120)
    )
    await asyncio.wait_for(running.wait(), 30)
    assert pids
    assert all(process_exists(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(process_exists(pid) for pid in pids)


async def test_failing_progress_callback_kills_ffmpeg(media: MediaFactory, tmp_path: Path) -> None:
    source = long_clip(media)
    info = await probe(source)
    output = tmp_path / "callback-marker.mp3"
    pids: list[int] = []

    async def on_progress(seconds: float) -> None:
        pids.extend(pids_running(str(output)))
        raise RuntimeError("broker gone")

    cmd = build_mp3_command(FFMPEG, source, output, info)
    with pytest.raises(RuntimeError, match="broker gone"):
        await run_ffmpeg(cmd, duration=info.duration, on_progress=on_progress, timeout=120)
    assert pids
    assert not any(process_exists(pid) for pid in pids)


async def test_truncated_mp4_with_index_at_end_fails_clearly(
    media: MediaFactory, tmp_path: Path
) -> None:
    cut = truncated_copy(media.h264_aac(10), tmp_path / "cut.mp4")

    async def probe_and_convert() -> None:
        info = await probe(cut)
        await convert_to_mp3(cut, tmp_path / "out.mp3", info, ffmpeg=FFMPEG)

    with pytest.raises(MediaError) as caught:
        await probe_and_convert()
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA


async def test_truncated_faststart_mp4_fails_at_conversion(
    media: MediaFactory, tmp_path: Path
) -> None:
    cut = truncated_copy(faststart_mp4(media), tmp_path / "cut.mp4")
    info = await probe(cut)  # the index is intact, so this succeeds
    with pytest.raises(FFmpegFailed) as caught:
        await convert_to_mp3(cut, tmp_path / "out.mp3", info, ffmpeg=FFMPEG)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert caught.value.detail == "the file is incomplete or truncated"
    assert caught.value.returncode == 0
    assert "partial file" in caught.value.stderr
    assert str(tmp_path) not in caught.value.stderr  # server paths are redacted


async def test_unreadable_input_bypassing_probe(tmp_path: Path) -> None:
    """If the file changed after probing, FFmpeg's own error still maps to a code."""
    source = tmp_path / "junk.mp4"
    source.write_bytes(b"not a video at all" * 100)
    cmd = build_mp3_command(FFMPEG, source, tmp_path / "out.mp3", info_with(2))
    with pytest.raises(FFmpegFailed) as caught:
        await run_ffmpeg(cmd, duration=10, on_progress=None, timeout=30)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert caught.value.returncode not in (0, None)


async def test_failure_detail_hides_server_paths(media: MediaFactory, tmp_path: Path) -> None:
    source = media.h264_aac(10)
    info = await probe(source)
    output = tmp_path / "no such dir" / "out.mp3"
    cmd = build_mp3_command(FFMPEG, source, output, info)
    with pytest.raises(FFmpegFailed) as caught:
        await run_ffmpeg(cmd, duration=info.duration, on_progress=None, timeout=30)
    assert caught.value.code is ErrorCode.CONVERSION_FAILED
    assert caught.value.detail.startswith("ffmpeg failed")
    assert str(tmp_path) not in caught.value.detail
    assert str(tmp_path) not in caught.value.stderr
    assert "<output>" in caught.value.stderr
