"""Upload and download throughput on loopback, against curl and a plain static file server.

    uv run python bench/transfer.py [--file-mib 1024] [--gridfs-mib 128] [--repeat 2]

The client is curl in every case. The gateway: `curl -F file=@X` to POST /v1/jobs (multipart,
stored into the blob store) and `curl -o /dev/null` from GET /v1/jobs/{id}/download. The
ceiling: the same file PUT to and GET from nginx (see bench/ceiling.py). The upload is a valid
MP4 padded with a sparse `free` box (bench.common.padded_mp4); for the download the job's output
blob is replaced by that file through shared.blobstore, so the gateway's real download path
streams it. Best of `--repeat`; target >= 0.8 of the ceiling with the file backend.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.ceiling import static_server
from bench.common import (
    MIB,
    bench_stack,
    curl_download,
    dependencies,
    login,
    padded_mp4,
    table,
    verdict,
    wait_job,
    write_results,
)
from shared.blobstore import BlobStore, FileBlobStore, GridFSBlobStore
from shared.mongo import mongo_client
from tests.support.net import free_port

TARGET = 0.8


def curl_put(url: str, path: Path) -> float:
    import subprocess
    import time

    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "--fail", "-H", "Expect:", "-T", str(path), url],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


async def gateway_runs(
    url: str, backend: str, mongo_url: str, mongo_db: str, blob_dir: Path, src: Path, repeat: int
) -> tuple[list[float], list[float]]:
    from bench.common import curl_upload

    src_size = src.stat().st_size  # noqa: ASYNC240
    ups: list[float] = []
    downs: list[float] = []
    mongo = mongo_client(mongo_url, timeout=60)
    store: BlobStore = (
        GridFSBlobStore(mongo[mongo_db]) if backend == "gridfs" else FileBlobStore(blob_dir)
    )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=900) as client:
            token = await login(client)
            for _ in range(repeat):
                job_id, up = await asyncio.to_thread(curl_upload, url, token, src)
                job = await wait_job(client, token, job_id, timeout=900)
                assert job["status"] == "completed", job
                await store.write_file(f"{job_id}-out", src)
                size, down = await asyncio.to_thread(
                    curl_download, f"{url}/v1/jobs/{job_id}/download", token
                )
                assert size == src_size
                ups.append(up)
                downs.append(down)
                await client.delete(
                    f"/v1/jobs/{job_id}", headers={"authorization": f"Bearer {token}"}
                )
    finally:
        await mongo.close()
    return ups, downs


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mib", type=int, default=1024)
    parser.add_argument("--gridfs-mib", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with dependencies() as deps, tempfile.TemporaryDirectory(prefix="transfer-") as tmp:
        work = Path(tmp)
        for backend, mib in (("file", args.file_mib), ("gridfs", args.gridfs_mib)):
            if mib <= 0:
                continue
            src = padded_mp4(mib * MIB, work)
            # Page cache warm for both sides alike.
            src.read_bytes() if mib <= 2048 else None
            with static_server(work / f"static-{backend}", free_port()) as (base, server):
                (work / f"static-{backend}" / "www" / "file.bin").hardlink_to(src)
                c_up = [
                    await asyncio.to_thread(curl_put, f"{base}/up/x{i}.bin", src)
                    for i in range(args.repeat)
                ]
                c_down = [
                    (await asyncio.to_thread(curl_download, f"{base}/file.bin"))[1]
                    for _ in range(args.repeat)
                ]
            env = {"MAX_UPLOAD_BYTES": str((mib + 64) * MIB)}
            async with bench_stack(deps, backend, **env) as bs:
                ups, downs = await gateway_runs(
                    bs.url, backend, deps.mongo_url, bs.mongo_db, bs.blob_dir, src, args.repeat
                )
            size = src.stat().st_size
            src.unlink()
            for direction, ours, ceiling in (("upload", ups, c_up), ("download", downs, c_down)):
                mbps, cmbps = size / min(ours) / 1e6, size / min(ceiling) / 1e6
                rows.append(
                    {
                        "backend": backend,
                        "direction": direction,
                        "bytes": size,
                        "ratio": round(mbps / cmbps, 3),
                        "mb_per_s": round(mbps, 1),
                        "ceiling_mb_per_s": round(cmbps, 1),
                        "ceiling": server,
                        "target": TARGET if backend == "file" else None,
                        "meets_target": mbps / cmbps >= TARGET if backend == "file" else None,
                        "runs_s": [round(v, 3) for v in ours],
                        "ceiling_runs_s": [round(v, 3) for v in ceiling],
                    }
                )
    print("transfer: curl on loopback, MB/s (1 MB = 10^6 bytes), best of", args.repeat)
    print(
        table(
            [
                "backend",
                "direction",
                "MiB",
                "ratio",
                "target",
                "",
                "MB/s",
                "ceiling MB/s",
                "ceiling",
            ],
            [
                [
                    r["backend"],
                    r["direction"],
                    r["bytes"] // MIB,
                    r["ratio"],
                    r["target"] or "-",
                    "-" if r["meets_target"] is None else verdict(r["meets_target"]),
                    r["mb_per_s"],
                    r["ceiling_mb_per_s"],
                    r["ceiling"],
                ]
                for r in rows
            ],
        )
    )
    write_results("transfer", {"repeat": args.repeat, "rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    asyncio.run(main())
