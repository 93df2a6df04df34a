"""Where a job's converter-side time goes, step by step, without RabbitMQ or the services.

    uv run python bench/profile_overhead.py [--seconds 10,60,600] [--repeat 5]

Runs the converter's own steps in this process, in the order `Converter._produce` runs them
(temp dir, probe, convert = plan + FFmpeg + inspect_output, blob_store.write_file) on the
`file` backend, and times each against the raw FFmpeg command of the overhead benchmark. Also
times the product's FFmpeg argv alone (run directly, no Python around it), so the difference
between "our FFmpeg command" and "our Python around it" is visible. Medians; JSON in
bench/results/profile_overhead.json. For a sampling profile of the same loop:

    uv run --with py-spy py-spy record -o /tmp/conv.svg -- python bench/profile_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import h264_aac, median, raw_ffmpeg_mp3, table, write_results
from services.converter.pipeline import convert
from services.converter.plan import build_output_command, plan_conversion
from shared.blobstore import FileBlobStore
from shared.ffmpeg_path import ffmpeg_executable
from shared.media import MediaPool
from shared.options import ConversionOptions

STEPS = ("mkdtemp", "probe", "convert", "write_file", "total", "product_argv_alone", "raw_ffmpeg")


async def one(
    libav: MediaPool, source: Path, root: Path, store: FileBlobStore, n: int
) -> dict[str, float]:
    ffmpeg = ffmpeg_executable()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=root))
    t1 = time.perf_counter()
    info = await libav.probe(source)
    t2 = time.perf_counter()
    options = ConversionOptions.parse({})
    result = await convert(
        source, workdir, info, options, libav=libav, ffmpeg=ffmpeg, filename="bench.mp4"
    )
    t3 = time.perf_counter()
    await store.write_file(f"out-{n}", result.output)
    t4 = time.perf_counter()
    t.update(mkdtemp=t1 - t0, probe=t2 - t1, convert=t3 - t2, write_file=t4 - t3, total=t4 - t0)
    # The product's argv without Python around it (plus its inspect_output, timed apart).
    plan = plan_conversion(info, options, "bench.mp4")
    argv = build_output_command(ffmpeg, source, workdir / "again.mp3", info, plan)
    s = time.perf_counter()
    await asyncio.to_thread(subprocess.run, argv, check=True, capture_output=True)
    t["product_argv_alone"] = time.perf_counter() - s
    s = time.perf_counter()
    await libav.inspect(workdir / "again.mp3")
    t["inspect_output"] = time.perf_counter() - s
    t["raw_ffmpeg"] = await asyncio.to_thread(raw_ffmpeg_mp3, source, workdir / "raw.mp3")
    shutil.rmtree(workdir)
    return t


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="10,60,600")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    libav = MediaPool()
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        root = Path(tmp)
        store = FileBlobStore(root / "blobs")
        for seconds in (int(s) for s in args.seconds.split(",")):
            source = h264_aac(seconds)
            runs = [await one(libav, source, root, store, n) for n in range(args.repeat)]
            keys = list(runs[0])
            rows.append(
                {"seconds": seconds, **{k: round(median([r[k] for r in runs]), 4) for k in keys}}
            )
    libav.close()
    keys = [k for k in rows[0] if k != "seconds"]
    print("converter steps on the file backend (median seconds)")
    print(table(["video", *keys], [[f"{r['seconds']}s", *(r[k] for k in keys)] for r in rows]))
    result = {"repeat": args.repeat, "rows": rows}
    write_results("profile_overhead", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
