"""Running FFmpeg: the commands `plan.py` builds, run by `run_ffmpeg` and `pipeline.convert`.

Progress, timeouts, cancellation, failure codes and path redaction are checked on the
product's real path: commands from `build_output_command`, conversions through `convert`.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from pathlib import Path
from typing import Any, cast

import av
import pytest

from services.converter.ffmpeg import (
    MAX_CONVERSION_SECONDS,
    FFmpegFailed,
    run_ffmpeg,
    timeout_for,
)
from services.converter.pipeline import ConversionResult, FractionCallback, convert
from services.converter.plan import build_output_command, plan_conversion
from services.converter.service import Converter
from shared.errors import ErrorCode, MediaError
from shared.ffmpeg_path import ffmpeg_executable
from shared.jobs import AudioTrack
from shared.media import MediaInfo, MediaPool
from shared.media.failures import describe_failure
from shared.options import ConversionOptions
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


def output_command(
    source: Path,
    output: Path,
    info: MediaInfo,
    options: ConversionOptions | None = None,
    *,
    ffmpeg: str = FFMPEG,
) -> list[str]:
    """The command the pipeline runs to write `output` (single pass, no cover)."""
    plan = plan_conversion(info, options or ConversionOptions(), source.name)
    return build_output_command(ffmpeg, source, output, info, plan)


async def convert_file(
    libav: MediaPool,
    source: Path,
    workdir: Path,
    info: MediaInfo | None = None,
    options: ConversionOptions | None = None,
    *,
    on_progress: FractionCallback | None = None,
    timeout: float | None = None,
) -> ConversionResult:
    """`pipeline.convert` as the service calls it; `info` defaults to a fresh probe."""
    return await convert(
        source,
        workdir,
        info if info is not None else await libav.probe(source),
        options or ConversionOptions(),
        libav=libav,
        ffmpeg=FFMPEG,
        filename=source.name,
        on_progress=on_progress,
        timeout=timeout,
    )


# --- the command (pure) ---


def test_command_for_a_stereo_source(tmp_path: Path) -> None:
    source, output = tmp_path / "in.mp4", tmp_path / "output.mp3"
    cmd = output_command(source, output, info_with(2), ffmpeg="/usr/bin/ffmpeg")
    assert cmd == [
        "/usr/bin/ffmpeg",
        "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file",
        "-format_whitelist", "mov",
        "-f", "mov",
        "-max_pixels", "66355200",
        "-i", f"file:{source}",
        "-map", "0:a:0",
        "-vn", "-sn", "-dn",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-metadata", "title=in",
        "-af", "aresample=async=1:first_pts=0",
        "-c:a", "libmp3lame", "-q:a", "2",
        "-id3v2_version", "4", "-write_id3v1", "0",
        "-t", "80.000", "-fs", str(80 * 60_000 + 8 * 1024 * 1024),
        "-progress", "pipe:1", "-nostats",
        "-f", "mp3",
        f"file:{output}",
    ]  # fmt: skip


def test_command_downmixes_surround_and_unknown_layouts(tmp_path: Path) -> None:
    for channels in (6, 8, None):
        cmd = output_command(tmp_path / "a", tmp_path / "b", info_with(channels))
        assert cmd[cmd.index("-ac") + 1] == "2"
        assert cmd[cmd.index("-af") + 1] == (
            "aresample=async=1:first_pts=0,aformat=channel_layouts=stereo"
        )
    for channels in (1, 2):
        cmd = output_command(tmp_path / "a", tmp_path / "b", info_with(channels))
        assert "-ac" not in cmd
        assert cmd[cmd.index("-af") + 1] == "aresample=async=1:first_pts=0"


def test_command_picks_the_track_quality_and_title(tmp_path: Path) -> None:
    info = info_with(2, 6, format_name="matroska")
    options = ConversionOptions(audio_track=1, quality=5, title="Talk")
    cmd = output_command(tmp_path / "a", tmp_path / "b", info, options)
    assert cmd[cmd.index("-map") + 1] == "0:a:1"
    assert cmd[cmd.index("-format_whitelist") + 1] == "matroska"
    assert cmd[cmd.index("-f") + 1] == "matroska"
    assert cmd[cmd.index("-q:a") + 1] == "5"
    assert cmd[cmd.index("-ac") + 1] == "2"  # the chosen track's channels count
    assert cmd[cmd.index("-metadata") + 1] == "title=Talk"


def test_command_keeps_a_hostile_name_in_one_argument(tmp_path: Path) -> None:
    source = Path("relative dir") / "a.mp4 -i http:127.0.0.1:9 -f mp3"
    cmd = output_command(source, tmp_path / "b", info_with(2))
    assert cmd.count("-i") == 1
    assert cmd[cmd.index("-i") + 1] == f"file:{source.resolve()}"
    assert Path(cmd[cmd.index("-i") + 1].removeprefix("file:")).is_absolute()
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"


def test_timeout_scales_with_duration_and_is_bounded() -> None:
    assert timeout_for(None) == 3600
    assert timeout_for(0) == 3600
    assert timeout_for(10) == 80
    assert timeout_for(600) == 1260
    assert timeout_for(10 * 24 * 3600) == MAX_CONVERSION_SECONDS


def test_the_converters_limit_counts_passes_and_ends_before_the_brokers() -> None:
    unused = cast(Any, None)
    converter = Converter(
        jobs=unused, blobs=unused, publisher=unused, work_dir=Path("/none"), libav=unused
    )
    assert converter.timeout_for(None) == 3600
    assert converter.timeout_for(600) == 1260
    assert converter.timeout_for(600, passes=2) == 2520
    # A 13 h source would get 26 h: past the 24 h after which RabbitMQ (consumer_timeout in
    # compose.yaml) hands the job to another converter.
    assert converter.timeout_for(13 * 3600) == MAX_CONVERSION_SECONDS < 24 * 3600


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
        (
            # A stream whose codec FFmpeg cannot name (a WAV with an unknown format tag).
            "[aist#0:0/none @ 0x1] Decoding requested, but no decoder found for: none\n",
            1,
            ErrorCode.CONVERSION_FAILED,
            "the audio codec is not supported",
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


async def test_converts_the_10s_clip(media: MediaFactory, tmp_path: Path, libav: MediaPool) -> None:
    source = media.h264_aac(10)
    result = await convert_file(libav, source, tmp_path)
    output = result.output

    assert output == tmp_path / "output.mp3"
    assert result.path == "encode"
    decoded = decode(output)
    assert decoded.codec.startswith("mp3")
    assert decoded.channels == 2
    assert decoded.sample_rate == 44100
    assert decoded.duration == pytest.approx(10, abs=0.15)

    described = result.media
    assert described.codec == "mp3"
    assert described.channels == 2
    assert described.sample_rate == 44100
    assert described.duration == pytest.approx(decoded.duration, abs=0.05)
    assert described.bitrate
    assert 8_000 < described.bitrate < 320_000

    assert await libav.inspect(output) == described
    view = result.to_output_info(output.stat().st_size, "clip.mp3")
    assert (view.codec, view.channels, view.filename) == ("mp3", 2, "clip.mp3")
    assert view.content_type == "audio/mpeg"


async def test_converts_bigbuckbunny_51_to_stereo(
    shared_media: Path, tmp_path: Path, libav: MediaPool
) -> None:
    result = await convert_file(libav, shared_media / "bigbuckbunny.mp4", tmp_path)
    decoded = decode(result.output)
    assert decoded.channels == 2
    assert decoded.sample_rate == 48000
    assert decoded.duration == pytest.approx(5.312, abs=0.15)
    assert result.media.channels == 2
    # Real music at -q:a 2 lands near LAME's ~190 kbit/s VBR target.
    assert result.media.bitrate
    assert 120_000 < result.media.bitrate < 260_000
    left, right = channel_rms(result.output)
    assert left > 0.01
    assert right > 0.01


async def test_51_downmix_puts_each_channel_where_it_belongs(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
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
        info = await libav.probe(source)
        assert info.audio_tracks[0].channels == 6
        workdir = tmp_path / name
        workdir.mkdir()
        result = await convert_file(libav, source, workdir, info)
        rms[name] = channel_rms(result.output)

    left, right = rms["front_left"]
    assert left > 0.1
    assert right < left / 20
    left, right = rms["centre"]
    assert left > 0.05
    assert left == pytest.approx(right, rel=0.1)
    left, right = rms["surround_right"]
    assert right > 0.05
    assert left < right / 20


async def test_converts_the_second_track_only(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = two_track_mkv(media)
    result = await convert_file(libav, source, tmp_path, options=ConversionOptions(audio_track=1))
    assert result.track == 1
    decoded = decode(result.output)
    assert (decoded.channels, decoded.sample_rate) == (1, 22050)
    assert decoded.duration == pytest.approx(4, abs=0.15)
    assert result.media.channels == 1


async def test_track_out_of_range_fails_before_ffmpeg(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    with pytest.raises(MediaError) as caught:
        await convert_file(
            libav, two_track_mkv(media), tmp_path, options=ConversionOptions(audio_track=2)
        )
    assert caught.value.code is ErrorCode.NO_AUDIO_STREAM
    assert list(tmp_path.iterdir()) == []


async def test_hostile_file_name_converts_as_a_file(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = tmp_path / "my clip -i http:127.0.0.1:9 -f mp3 x.mp4"
    source.symlink_to(media.h264_aac(10))
    workdir = tmp_path / "out -y file:elsewhere"
    workdir.mkdir()
    result = await convert_file(libav, source, workdir)
    assert decode(result.output).duration == pytest.approx(10, abs=0.15)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, workdir.name])
    assert [p.name for p in workdir.iterdir()] == ["output.mp3"]


async def test_progress_is_monotonic_and_reaches_the_end(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = long_clip(media)
    info = await libav.probe(source)
    seen: list[float] = []

    async def on_progress(seconds: float) -> None:
        seen.append(seconds)

    cmd = output_command(source, tmp_path / "output.mp3", info)
    await run_ffmpeg(cmd, duration=info.duration, on_progress=on_progress, timeout=120)
    assert len(seen) >= 2, seen
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert info.duration is not None
    assert seen[-1] == pytest.approx(info.duration, abs=1)
    assert all(0 <= s <= info.duration for s in seen)


async def test_conversion_progress_is_a_monotonic_fraction(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    await convert_file(libav, long_clip(media), tmp_path, on_progress=on_progress)
    assert len(seen) >= 2, seen
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)
    assert all(0 <= f <= 1 for f in seen)
    assert seen[-1] == pytest.approx(1.0, abs=0.01)


async def test_timeout_kills_ffmpeg(media: MediaFactory, tmp_path: Path, libav: MediaPool) -> None:
    source = long_clip(media)
    info = await libav.probe(source)
    workdir = tmp_path / "timeout-marker"
    workdir.mkdir()
    pids: list[int] = []

    async def on_progress(fraction: float) -> None:
        pids.extend(pids_running(str(workdir)))

    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await convert_file(libav, source, workdir, info, on_progress=on_progress, timeout=1.5)
    assert time.monotonic() - started < 5
    assert caught.value.code is ErrorCode.TIMEOUT
    assert caught.value.detail == "conversion took too long"
    assert pids, "ffmpeg never reported progress before the timeout"
    assert not any(process_exists(pid) for pid in pids)
    assert pids_running(str(workdir)) == []


async def test_cancellation_kills_ffmpeg(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = long_clip(media)
    info = await libav.probe(source)
    workdir = tmp_path / "cancel-marker"
    workdir.mkdir()
    running = asyncio.Event()
    pids: list[int] = []

    async def on_progress(fraction: float) -> None:
        if not pids:
            pids.extend(pids_running(str(workdir)))
        running.set()

    task = asyncio.create_task(convert_file(libav, source, workdir, info, on_progress=on_progress))
    await asyncio.wait_for(running.wait(), 30)
    assert pids
    assert all(process_exists(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(process_exists(pid) for pid in pids)
    assert pids_running(str(workdir)) == []


async def test_failing_progress_callback_kills_ffmpeg(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = long_clip(media)
    info = await libav.probe(source)
    workdir = tmp_path / "callback-marker"
    workdir.mkdir()
    pids: list[int] = []

    async def on_progress(fraction: float) -> None:
        pids.extend(pids_running(str(workdir)))
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError, match="broker gone"):
        await convert_file(libav, source, workdir, info, on_progress=on_progress)
    assert pids
    assert not any(process_exists(pid) for pid in pids)


async def test_a_timeout_of_the_callers_own_is_not_a_conversion_timeout(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # A socket timeout (TimeoutError) from the progress callback or the piped input is that
    # step's failure: reported as the conversion taking too long, the job would fail for good
    # with `timeout` instead of being retried.
    source = long_clip(media)
    info = await libav.probe(source)
    workdir = tmp_path / "own-timeout-marker"
    workdir.mkdir()
    pids: list[int] = []

    async def on_progress(fraction: float) -> None:
        pids.extend(pids_running(str(workdir)))
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError, match="timed out"):
        await convert_file(libav, source, workdir, info, on_progress=on_progress)
    assert pids
    assert not any(process_exists(pid) for pid in pids)


async def test_truncated_mp4_with_index_at_end_fails_clearly(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    cut = truncated_copy(media.h264_aac(10), tmp_path / "cut.mp4")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(MediaError) as caught:
        await convert_file(libav, cut, workdir)  # probing included
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA


async def test_truncated_faststart_mp4_fails_at_conversion(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    cut = truncated_copy(faststart_mp4(media), tmp_path / "cut.mp4")
    info = await libav.probe(cut)  # the index is intact, so this succeeds
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(FFmpegFailed) as caught:
        await convert_file(libav, cut, workdir, info)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert caught.value.detail == "the file is incomplete or truncated"
    assert caught.value.returncode == 0
    assert "partial file" in caught.value.stderr
    assert str(tmp_path) not in caught.value.stderr  # server paths are redacted


async def test_unreadable_input_bypassing_probe(tmp_path: Path, libav: MediaPool) -> None:
    """If the file changed after probing, FFmpeg's own error still maps to a code."""
    source = tmp_path / "junk.mp4"
    source.write_bytes(b"not a video at all" * 100)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(FFmpegFailed) as caught:
        await convert_file(libav, source, workdir, info_with(2), timeout=30)
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert caught.value.returncode not in (0, None)


async def test_failure_detail_hides_server_paths(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.h264_aac(10)
    workdir = tmp_path / "no such dir"  # never created: FFmpeg cannot open the output
    with pytest.raises(FFmpegFailed) as caught:
        await convert_file(libav, source, workdir, timeout=30)
    assert caught.value.code is ErrorCode.CONVERSION_FAILED
    assert caught.value.detail.startswith("ffmpeg failed")
    assert str(tmp_path) not in caught.value.detail
    assert str(tmp_path) not in caught.value.stderr
    assert "<output>" in caught.value.stderr
