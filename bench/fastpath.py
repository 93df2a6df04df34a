"""Stream copy against re-encoding, through the converter's own entry point.

    uv run python bench/fastpath.py [--minutes 10] [--repeat 3]

Builds an MP3-in-AVI source (MPEG-4 video, 128 kbit/s MP3 audio), converts it with default
options (the fast path: `-c:a copy`) and with an explicit bitrate (forces a LAME re-encode),
prints a table and writes bench/results/fastpath.json. The issue's target is a ratio >= 20.

Wall time on a shared machine mostly measures the neighbours, so each run also records the CPU
time used (this process's and its children's, user + system: the copy runs in a libav process,
which lives on between runs and is read from /proc, the encode in an FFmpeg child), and the
ratio is taken from the best run of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from services.converter.pipeline import convert  # noqa: E402
from shared.ffmpeg_path import ffmpeg_executable  # noqa: E402
from shared.media import MediaPool  # noqa: E402
from shared.options import ConversionOptions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fastpath.json"
TARGET_RATIO = 20.0


def build_source(ffmpeg: str, target: Path, seconds: int) -> None:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=10:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
         "-c:v", "mpeg4", "-q:v", "12", "-c:a", "libmp3lame", "-b:a", "128k", "-ac", "2",
         str(target)],
        check=True,
    )  # fmt: skip


async def timed(
    libav: MediaPool, source: Path, workdir: Path, form: dict[str, str], ffmpeg: str
) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (ours and FFmpeg's), and the path the conversion took."""
    info = await libav.probe(source)
    options = ConversionOptions.from_form(form)
    cpu_before = _cpu(libav)
    started = time.perf_counter()
    result = await convert(
        source, workdir, info, options, libav=libav, ffmpeg=ffmpeg, filename="bench.avi"
    )
    elapsed = time.perf_counter() - started
    cpu = _cpu(libav) - cpu_before
    result.output.unlink()
    return elapsed, cpu, result.path


def _cpu(libav: MediaPool) -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    # Children still running are not in RUSAGE_CHILDREN: the pool's libav processes.
    idle, busy = libav.pids()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in idle + busy:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _summary(values: list[float]) -> dict[str, object]:
    return {
        "best": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "runs": [round(v, 3) for v in values],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ffmpeg = ffmpeg_executable()
    seconds = int(args.minutes * 60)

    libav = MediaPool()
    with tempfile.TemporaryDirectory(prefix="fastpath-") as tmp:
        workdir = Path(tmp)
        source = workdir / "source.avi"
        build_source(ffmpeg, source, seconds)
        wall: dict[str, list[float]] = {"copy": [], "encode": []}
        cpu: dict[str, list[float]] = {"copy": [], "encode": []}
        cases: dict[str, dict[str, str]] = {"copy": {}, "encode": {"bitrate": "128"}}
        for _ in range(args.repeat):
            for name, form in cases.items():
                elapsed, used, path = await timed(libav, source, workdir, form, ffmpeg)
                assert path == name, (name, path)
                wall[name].append(elapsed)
                cpu[name].append(used)
        size = source.stat().st_size
    libav.close()

    ratio = min(wall["encode"]) / min(wall["copy"])
    cpu_ratio = min(cpu["encode"]) / max(min(cpu["copy"]), 1e-3)
    report = {
        "source": {"container": "avi", "audio": "mp3 128k stereo 44.1 kHz", "seconds": seconds,
                   "bytes": size},
        "repeat": args.repeat,
        "wall_seconds": {name: _summary(values) for name, values in wall.items()},
        "cpu_seconds": {name: _summary(values) for name, values in cpu.items()},
        "ratio": round(ratio, 1),
        "cpu_ratio": round(cpu_ratio, 1),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "ffmpeg": ffmpeg,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"source: {seconds / 60:g} min MP3-in-AVI, {size / 1e6:.1f} MB, {args.repeat} runs each")
    print(f"{'path':<8}{'best wall s':>12}{'median wall s':>15}{'cpu s':>14}{'x realtime':>12}")
    for name in ("copy", "encode"):
        best = min(wall[name])
        print(
            f"{name:<8}{best:>12.3f}{statistics.median(wall[name]):>15.3f}"
            f"{min(cpu[name]):>14.3f}{seconds / best:>12.0f}"
        )
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(
        f"ratio encode/copy: {ratio:.1f}x wall, {cpu_ratio:.1f}x cpu "
        f"({verdict} the {TARGET_RATIO:g}x target; load average {os.getloadavg()[0]:.1f})"
    )
    print(f"written: {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    asyncio.run(main())
