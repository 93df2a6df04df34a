"""Our overhead: upload response -> job.completed, against raw FFmpeg plus bare blob I/O.

    uv run python bench/overhead.py [--seconds 10,60,600] [--repeat 5] [--backends file,gridfs]

For each generated H.264/AAC video (320x240, 25 fps, 128 kbit/s AAC) and each blob-store
backend, a job is uploaded and the time from the upload's response to `job.completed` on the
WebSocket is measured. Interleaved with each job, the baseline runs on the same machine:
(a) `ffmpeg -i IN -vn -c:a libmp3lame -q:a 2 OUT.mp3` on a local copy, with the converter's
FFmpeg binary, and (b) a bare read of the source plus a bare write of the output through the
same backend (shared.blobstore, on the same nx-27017 server for GridFS). The ratio is the
median, over `--repeat` runs (`--short-repeat` for videos under SHORT seconds: a job of a
fraction of a second moves by a third when one run of it meets a busy moment of the host, and
eleven such runs cost seconds), of each job's time over its own baseline's; the ratio of the
medians is printed beside it. Targets: <= 1.10 (60 s, 600 s) and <= 1.5 (10 s) against
(a)+(b), and <= 1.2 against (a) alone with the file backend (60 s, 600 s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    VIDEO_SIZE,
    BenchStack,
    JobWatcher,
    bench_stack,
    dependencies,
    h264_aac,
    login,
    median,
    raw_ffmpeg_mp3,
    table,
    upload,
    verdict,
    write_results,
)
from shared.blobstore import BlobStore, FileBlobStore, GridFSBlobStore
from shared.mongo import mongo_client

TARGET_TOTAL = {10: 1.5}
TARGET_TOTAL_DEFAULT = 1.10
TARGET_FFMPEG_FILE = 1.2
SHORT = 300


def target_total(seconds: int) -> float:
    return TARGET_TOTAL.get(seconds, TARGET_TOTAL_DEFAULT)


async def bare_blob_io(store: BlobStore, source_id: str, output: Path) -> float:
    """Read the whole source through the store and store the output: the (b) baseline."""
    started = time.perf_counter()
    async for _chunk in store.read(source_id):
        pass
    out_id = f"bare-{uuid.uuid4().hex}"
    await store.write_file(out_id, output)
    elapsed = time.perf_counter() - started
    await store.delete(out_id)
    return elapsed


async def run_backend(
    bs: BenchStack, sources: dict[int, Path], repeat: int, short_repeat: int, work: Path
) -> list[dict[str, Any]]:
    mongo = mongo_client(bs.deps.mongo_url)
    store: BlobStore
    if bs.backend == "gridfs":
        store = GridFSBlobStore(mongo[f"baseline{uuid.uuid4().hex[:8]}"])
    else:
        store = FileBlobStore(work / "baseline-blobs")
    rows: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(base_url=bs.url, timeout=600) as client:
            token = await login(client)
            auth = {"authorization": f"Bearer {token}"}
            async with JobWatcher(bs.url, token) as watcher:
                for seconds, source in sources.items():
                    source_id = f"src-{seconds}-{uuid.uuid4().hex[:8]}"
                    await store.write_file(source_id, source)
                    local = work / f"local-{seconds}.mp4"
                    shutil.copyfile(source, local)
                    product: list[float] = []
                    uploads: list[float] = []
                    ffmpeg_s: list[float] = []
                    blob_s: list[float] = []
                    phases: list[dict[str, float]] = []
                    for _ in range(short_repeat if seconds < SHORT else repeat):
                        job_id, responded, upload_s = await upload(client, token, source)
                        kind, finished = await watcher.wait(job_id)
                        if kind != "job.completed":
                            raise RuntimeError(f"job {job_id} ended {kind}")
                        product.append(finished - responded)
                        responded_wall = time.time() - (time.monotonic() - responded)
                        phases.append(_phases(watcher, job_id, responded_wall))
                        uploads.append(upload_s)
                        await client.delete(f"/v1/jobs/{job_id}", headers=auth)
                        out = work / f"raw-{seconds}.mp3"
                        ffmpeg_s.append(await asyncio.to_thread(raw_ffmpeg_mp3, local, out))
                        blob_s.append(await bare_blob_io(store, source_id, out))
                    await store.delete(source_id)
                    row = _row(bs.backend, seconds, source, product, uploads, ffmpeg_s, blob_s)
                    row["phases_s"] = {
                        key: round(median([p[key] for p in phases if key in p]), 3)
                        for key in PHASES
                        if any(key in p for p in phases)
                    }
                    rows.append(row)
                    print(
                        f"  {bs.backend} {seconds}s: product {median(product):.3f}s, "
                        f"ffmpeg {median(ffmpeg_s):.3f}s, blob {median(blob_s):.3f}s",
                        flush=True,
                    )
    finally:
        await mongo.close()
    return rows


PHASES = ("queue_and_claim", "to_first_progress", "converter_work", "finish_and_deliver")


def _when(message: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(message["occurred_at"]).timestamp()


def _phases(watcher: JobWatcher, job_id: str, responded_wall: float) -> dict[str, float]:
    """Where one job's time went, from the events' own `occurred_at` (converter clock = ours):
    response -> job.started (queue, claim); job.started -> first job.progress (temp dir, probe,
    source info, FFmpeg start); job.started -> job.completed's occurred_at (everything up to the
    stored output); -> receipt (complete in MongoDB, final publishes, gateway fan-out)."""
    mine = [(t, m) for t, m in watcher.events if m.get("job_id") == job_id]
    started = next((m for _, m in mine if m["type"] == "job.started"), None)
    progress = next((m for _, m in mine if m["type"] == "job.progress"), None)
    done = next(((t, m) for t, m in mine if m["type"] == "job.completed"), None)
    out: dict[str, float] = {}
    if started is None or done is None:
        return out
    out["queue_and_claim"] = _when(started) - responded_wall
    if progress is not None:
        out["to_first_progress"] = _when(progress) - _when(started)
    out["converter_work"] = _when(done[1]) - _when(started)
    out["finish_and_deliver"] = done[0] - _when(done[1])
    return out


def _row(
    backend: str,
    seconds: int,
    source: Path,
    product: list[float],
    uploads: list[float],
    ffmpeg_s: list[float],
    blob_s: list[float],
) -> dict[str, Any]:
    # Judged on the median of each job's ratio to the baseline run right after it: the host
    # drifts over a minute (raw FFmpeg on one 600 s file went 1.95 -> 2.84 s within one row of
    # run 22), and a pair taken together cancels that; a ratio of medians mixes moments.
    ratio = median([p / (f + b) for p, f, b in zip(product, ffmpeg_s, blob_s, strict=True)])
    ratio_ffmpeg = median([p / f for p, f in zip(product, ffmpeg_s, strict=True)])
    base = median([f + b for f, b in zip(ffmpeg_s, blob_s, strict=True)])
    ok = ratio <= target_total(seconds)
    if backend == "file" and seconds >= 60:
        ok = ok and ratio_ffmpeg <= TARGET_FFMPEG_FILE
    return {
        "backend": backend,
        "seconds": seconds,
        "source_bytes": source.stat().st_size,
        "ratio_to_baseline": round(ratio, 3),
        "ratio_to_ffmpeg": round(ratio_ffmpeg, 3),
        "ratio_of_medians_to_baseline": round(median(product) / base, 3),
        "ratio_of_medians_to_ffmpeg": round(median(product) / median(ffmpeg_s), 3),
        "target_ratio_to_baseline": target_total(seconds),
        "target_ratio_to_ffmpeg": TARGET_FFMPEG_FILE
        if backend == "file" and seconds >= 60
        else None,
        "meets_target": ok,
        "product_s": {"median": round(median(product), 3), "runs": [round(v, 3) for v in product]},
        "upload_s": {"median": round(median(uploads), 3), "runs": [round(v, 3) for v in uploads]},
        "raw_ffmpeg_s": {
            "median": round(median(ffmpeg_s), 3),
            "runs": [round(v, 3) for v in ffmpeg_s],
        },
        "bare_blob_io_s": {
            "median": round(median(blob_s), 3),
            "runs": [round(v, 3) for v in blob_s],
        },
    }


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        table(
            [
                "backend",
                "video",
                "MB",
                "ratio",
                "target",
                "vs ffmpeg",
                "of medians",
                "product s",
                "ffmpeg s",
                "blob io s",
                "upload s",
                "",
            ],
            [
                [
                    r["backend"],
                    f"{r['seconds']}s",
                    round(r["source_bytes"] / 1e6, 1),
                    r["ratio_to_baseline"],
                    r["target_ratio_to_baseline"],
                    r["ratio_to_ffmpeg"],
                    f"{r['ratio_of_medians_to_baseline']} / {r['ratio_of_medians_to_ffmpeg']}",
                    r["product_s"]["median"],
                    r["raw_ffmpeg_s"]["median"],
                    r["bare_blob_io_s"]["median"],
                    r["upload_s"]["median"],
                    verdict(r["meets_target"]),
                ]
                for r in rows
            ],
        )
    )


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="10,60,600")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--short-repeat", type=int, default=11)
    parser.add_argument("--backends", default="file,gridfs")
    args = parser.parse_args(argv)
    sources = {int(s): h264_aac(int(s)) for s in args.seconds.split(",")}
    rows: list[dict[str, Any]] = []
    with dependencies() as deps, tempfile.TemporaryDirectory(prefix="overhead-") as tmp:
        for backend in args.backends.split(","):
            async with bench_stack(deps, backend) as bs:
                rows += await run_backend(bs, sources, args.repeat, args.short_repeat, Path(tmp))
    print(
        f"overhead: upload response -> job.completed, {VIDEO_SIZE} H.264/AAC, "
        f"median of {args.short_repeat} (under {SHORT} s) or {args.repeat} job/baseline pairs"
    )
    print_rows(rows)
    result = {
        "video": f"{VIDEO_SIZE} 25 fps H.264 ultrafast + AAC 128k stereo",
        "repeat": args.repeat,
        "short_repeat": args.short_repeat,
        "rows": rows,
    }
    write_results("overhead", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
