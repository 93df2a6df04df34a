"""Throughput: 40 jobs of 60 s videos submitted at once, against xargs -P of raw FFmpeg.

    uv run python bench/throughput.py [--jobs 40] [--seconds 60]

File backend, default converter concurrency (one per CPU). The product's time runs from the
first upload's request to the last `job.completed` on the WebSocket, so it includes the 40
uploads; the baseline, through `xargs -P $(nproc)`, does per job what the product does with
the bytes: copy the source into a blob directory, run
`ffmpeg -i IN -vn -c:a libmp3lame -q:a 2 OUT.mp3`, copy the MP3 into the blob directory.
Jobs per minute, product / baseline; target >= 0.85. `--rounds` pairs (default 3) in
alternating order, product first then baseline first, medians of each: one pair is some 30 s of
both cores, and a busy half-minute of the host moved a single pair's ratio by a fifth.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    VIDEO_SIZE,
    JobWatcher,
    bench_stack,
    dependencies,
    ffmpeg,
    h264_aac,
    login,
    median,
    table,
    upload,
    verdict,
    write_results,
)

TARGET = 0.85

JOB_SCRIPT = (
    'set -e; i="$1"; cp "$SRC" "$BLOBS/src-$i"; '
    '"$FFMPEG" -nostdin -hide_banner -loglevel error -y -i "$BLOBS/src-$i" '
    '-vn -c:a libmp3lame -q:a 2 "$WORK/out-$i.mp3"; '
    'cp "$WORK/out-$i.mp3" "$BLOBS/out-$i"'
)


def baseline(source: Path, jobs: int, parent: Path) -> float:
    work = Path(tempfile.mkdtemp(prefix="baseline-", dir=parent))  # one per round
    blobs = work / "blobs"
    blobs.mkdir()
    env = {
        **os.environ,
        "SRC": str(source),
        "BLOBS": str(blobs),
        "WORK": str(work),
        "FFMPEG": ffmpeg(),
    }
    numbers = "\n".join(str(i) for i in range(jobs)) + "\n"
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(os.cpu_count() or 1), "-n", "1", "sh", "-c", JOB_SCRIPT, "job"],
        input=numbers.encode(),
        env=env,
        check=True,
    )
    return time.perf_counter() - started


async def product(url: str, source: Path, jobs: int) -> tuple[float, float]:
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=jobs)
    ) as client:
        token = await login(client)
        async with JobWatcher(url, token) as watcher:
            started = time.monotonic()
            results = await asyncio.gather(*(upload(client, token, source) for _ in range(jobs)))
            uploaded = time.monotonic() - started
            finals = await asyncio.gather(*(watcher.wait(job_id) for job_id, _, _ in results))
            elapsed = max(t for _, t in finals) - started
            bad = [kind for kind, _ in finals if kind != "job.completed"]
            if bad:
                raise RuntimeError(f"{len(bad)} job(s) did not complete: {bad[:3]}")
    return elapsed, uploaded


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    source = h264_aac(args.seconds)
    ours_s: list[float] = []
    uploads_s: list[float] = []
    theirs_s: list[float] = []
    with dependencies() as deps, tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        async with bench_stack(deps, "file") as bs:
            for round_ in range(args.rounds):
                order = ("product", "baseline") if round_ % 2 == 0 else ("baseline", "product")
                for which in order:
                    if which == "product":
                        took, uploaded = await product(bs.url, source, args.jobs)
                        ours_s.append(took)
                        uploads_s.append(uploaded)
                    else:
                        theirs_s.append(
                            await asyncio.to_thread(baseline, source, args.jobs, Path(tmp))
                        )
    elapsed, uploaded, base = median(ours_s), median(uploads_s), median(theirs_s)
    ours, theirs = args.jobs * 60 / elapsed, args.jobs * 60 / base
    ratio = ours / theirs
    result = {
        "backend": "file",
        "jobs": args.jobs,
        "video": f"{args.seconds} s {VIDEO_SIZE} H.264/AAC, {source.stat().st_size} bytes",
        "concurrency": os.cpu_count(),
        "product_s": round(elapsed, 2),
        "product_uploads_s": round(uploaded, 2),
        "baseline_s": round(base, 2),
        "product_runs_s": [round(v, 2) for v in ours_s],
        "baseline_runs_s": [round(v, 2) for v in theirs_s],
        "product_jobs_per_min": round(ours, 1),
        "baseline_jobs_per_min": round(theirs, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    print(
        f"throughput: {args.jobs} x {args.seconds} s jobs at once, file backend, "
        f"concurrency {os.cpu_count()}, median of {args.rounds} rounds"
    )
    print(
        table(
            [
                "ratio",
                "target",
                "",
                "product jobs/min",
                "xargs jobs/min",
                "product s",
                "of which uploads s",
                "xargs s",
            ],
            [
                [
                    result["ratio"],
                    TARGET,
                    verdict(result["meets_target"]),
                    result["product_jobs_per_min"],
                    result["baseline_jobs_per_min"],
                    result["product_s"],
                    result["product_uploads_s"],
                    result["baseline_s"],
                ]
            ],
        )
    )
    write_results("throughput", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
