"""The in-process stream copy: the same file as FFmpeg's command line, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from services.converter.ffmpeg import run_ffmpeg
from services.converter.plan import ConversionPlan, build_output_command, plan_conversion
from services.converter.remux import copies_in_process, copy_mp3
from shared.errors import ErrorCode, MediaError
from shared.media import MediaInfo, MediaPool
from shared.options import ConversionOptions
from tests.converter.helpers import FFMPEG, id3
from tests.support.media import MediaFactory, decode


def mp3_tracks_mkv(media: MediaFactory) -> Path:
    """Matroska with a video, two MP3 tracks and metadata that must not reach the output."""
    return media.make(
        "mp3_tracks.mkv",
        [
            "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=22050:duration=3",
            "-map", "0:v", "-map", "1:a", "-map", "2:a",
            "-c:v", "mpeg4", "-c:a", "libmp3lame", "-b:a:0", "128k", "-b:a:1", "64k",
            "-ac:a:1", "1",
            "-metadata", "location=+48.8584+002.2945/",
            "-metadata", "comment=device 1234",
            "-metadata:s:a:1", "title=Commentary",
        ],
    )  # fmt: skip


def mp3_in_ts_at_an_hour(media: MediaFactory) -> Path:
    """MPEG-TS whose timestamps start one hour in, as a cut from a broadcast does."""
    return media.make(
        "mp3_at_3600.ts",
        [
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=20",
            "-c:a", "libmp3lame", "-b:a", "128k", "-output_ts_offset", "3600",
        ],
    )  # fmt: skip


def mp3_in_mp4(media: MediaFactory) -> Path:
    return media.make(
        "mp3.mp4",
        ["-f", "lavfi", "-i", "sine=duration=3", "-c:a", "libmp3lame", "-b:a", "128k"],
    )


async def plan_for(
    libav: MediaPool, source: Path, form: dict[str, str]
) -> tuple[MediaInfo, ConversionPlan]:
    info = await libav.probe(source)
    plan = plan_conversion(info, ConversionOptions.from_form(form), source.name)
    assert copies_in_process(source, info, plan, None)
    return info, plan


def split_id3(path: Path) -> tuple[dict[str, str], bytes]:
    """The ID3v2 frames (text of each) and every byte after the tag."""
    data = path.read_bytes()
    assert data[:3] == b"ID3"
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    frames = {key: str(frame) for key, frame in id3(path).items()}
    return frames, data[10 + size :]


@pytest.mark.parametrize(
    ("kind", "form"),
    [
        ("avi", {"title": "Fast", "artist": "Band"}),
        ("mkv", {}),
        ("mkv", {"audio_track": "1", "year": "2024"}),
    ],
)
async def test_writes_what_the_command_line_writes(
    media: MediaFactory, tmp_path: Path, kind: str, form: dict[str, str], libav: MediaPool
) -> None:
    source = media.mp3_in_avi(4) if kind == "avi" else mp3_tracks_mkv(media)
    info, plan = await plan_for(libav, source, form)
    ours, theirs = tmp_path / "ours.mp3", tmp_path / "theirs.mp3"

    await copy_mp3(libav, source, ours, info, plan, on_progress=None, timeout=60)
    await run_ffmpeg(
        build_output_command(FFMPEG, source, theirs, info, plan),
        duration=None,
        on_progress=None,
        timeout=60,
    )

    our_tags, our_audio = split_id3(ours)
    their_tags, their_audio = split_id3(theirs)
    # Every MP3 frame and the Xing header are the same bytes; only the muxer's version in
    # TSSE may differ (PyAV bundles its own libavformat).
    assert our_audio == their_audio
    assert our_tags.keys() == their_tags.keys()
    assert {k: v for k, v in our_tags.items() if k != "TSSE"} == {
        k: v for k, v in their_tags.items() if k != "TSSE"
    }
    assert not any(("2.2945" in v or "1234" in v) for v in our_tags.values())
    assert our_audio[-128:-125] != b"TAG"  # no ID3v1
    expected_rate = 22050 if form.get("audio_track") == "1" else 44100
    assert decode(ours).sample_rate == expected_rate


@pytest.mark.parametrize("kind", ["avi", "ts"])
async def test_reports_progress_up_to_the_end(
    media: MediaFactory, tmp_path: Path, kind: str, libav: MediaPool
) -> None:
    # MPEG-TS timestamps rarely start at zero: progress counts from the first packet.
    source = media.mp3_in_avi(20) if kind == "avi" else mp3_in_ts_at_an_hour(media)
    info, plan = await plan_for(libav, source, {})
    seen: list[float] = []

    async def record(seconds: float) -> None:
        seen.append(seconds)

    await copy_mp3(libav, source, tmp_path / "out.mp3", info, plan, on_progress=record, timeout=60)
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(20, abs=0.2)


async def _assert_nothing_writes_after(output: Path) -> None:
    size = output.stat().st_size if output.exists() else -1
    await asyncio.sleep(0.3)
    assert (output.stat().st_size if output.exists() else -1) == size


@pytest.mark.parametrize("cancellations", [1, 2])
async def test_a_cancelled_copy_has_stopped_when_it_returns(
    media: MediaFactory, tmp_path: Path, cancellations: int, libav: MediaPool
) -> None:
    source = media.mp3_in_avi(600)
    info, plan = await plan_for(libav, source, {})
    output = tmp_path / "out.mp3"
    task = asyncio.create_task(
        copy_mp3(libav, source, output, info, plan, on_progress=None, timeout=60)
    )
    # Cancel once the copy is writing (a fixed pause can end before it has begun on a busy host).
    async with asyncio.timeout(30):
        while not output.exists() and not task.done():
            await asyncio.sleep(0.001)
    for _ in range(cancellations):
        # A second cancellation (a user's cancel, then shutdown) can land while the copy stops.
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    await _assert_nothing_writes_after(output)
    assert output.stat().st_size < source.stat().st_size // 3  # stopped, not finished


async def test_a_copy_blocked_in_a_read_is_killed_through_two_cancellations(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    # The source is a FIFO fed by this test, so the copy sits in a read that no flag can
    # interrupt: only killing its libav process ends it, and the cancelled copy returns once
    # that process is gone.
    real = media.mp3_in_avi(4)
    info, plan = await plan_for(libav, real, {})
    fifo = tmp_path / "source.avi"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(real.read_bytes()[: 64 * 1024])
            pipe.flush()
            release.wait(30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    pool = libav
    try:
        task = asyncio.create_task(
            copy_mp3(libav, fifo, tmp_path / "out.mp3", info, plan, on_progress=None, timeout=60)
        )
        await asyncio.sleep(0.5)
        [copying] = pool.pids()[1]
        for _ in range(2):
            task.cancel()
            await asyncio.sleep(0)
        async with asyncio.timeout(10):  # the feeder still holds the read open meanwhile
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not Path(f"/proc/{copying}").exists()  # killed and reaped
        assert copying not in pool.pids()[0] + pool.pids()[1]
    finally:
        release.set()
        feeder.join()


async def test_a_timed_out_copy_fails_with_timeout_and_stops(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.mp3_in_avi(600)
    info, plan = await plan_for(libav, source, {})
    output = tmp_path / "out.mp3"
    with pytest.raises(MediaError) as caught:
        await copy_mp3(libav, source, output, info, plan, on_progress=None, timeout=0.02)
    assert caught.value.code is ErrorCode.TIMEOUT
    await _assert_nothing_writes_after(output)


async def test_an_unreadable_source_gets_a_code_and_no_server_path(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = shutil.copy(media.mp3_in_avi(4), tmp_path / "clip.avi")
    info, plan = await plan_for(libav, Path(source), {})
    Path(source).write_bytes(b"\x00garbage" * 4096)  # replaced after the probe

    with pytest.raises(MediaError) as caught:
        await copy_mp3(
            libav, Path(source), tmp_path / "out.mp3", info, plan, on_progress=None, timeout=60
        )
    assert caught.value.code is ErrorCode.UNREADABLE_MEDIA
    assert str(tmp_path) not in str(caught.value)


async def test_a_source_whose_track_is_no_longer_mp3_fails_with_a_code(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = shutil.copy(media.mp3_in_avi(4), tmp_path / "clip.avi")
    info, plan = await plan_for(libav, Path(source), {})
    aac = media.clip(
        "aac.avi", video=["-c:v", "mpeg4"], audio=["-c:a", "aac", "-b:a", "96k"], seconds=4
    )
    shutil.copy(aac, source)  # swapped after the probe

    with pytest.raises(MediaError) as caught:
        await copy_mp3(
            libav, Path(source), tmp_path / "out.mp3", info, plan, on_progress=None, timeout=60
        )
    assert caught.value.code is ErrorCode.CONVERSION_FAILED


async def test_only_plain_local_copies_run_in_process(
    media: MediaFactory, tmp_path: Path, libav: MediaPool
) -> None:
    source = media.mp3_in_avi(4)
    info = await libav.probe(source)

    def plan(form: dict[str, str]) -> ConversionPlan:
        return plan_conversion(info, ConversionOptions.from_form(form), "clip.avi")

    assert copies_in_process(source, info, plan({}), None)
    assert not copies_in_process(source, info, plan({}), tmp_path / "cover.jpg")
    assert not copies_in_process(source, info, plan({"bitrate": "128"}), None)
    assert not copies_in_process(source, info, plan({"start": "1"}), None)
    assert not copies_in_process("pipe:0", info, plan({}), None)
    # MP4/MOV: the command line reports a cut-off file and writes the exact end padding.
    mp4 = mp3_in_mp4(media)
    mp4_info = await libav.probe(mp4)
    mp4_plan = plan_conversion(mp4_info, ConversionOptions.from_form({}), "a.mp4")
    assert mp4_plan.path == "copy"
    assert not copies_in_process(mp4, mp4_info, mp4_plan, None)
