"""Memory: a 2 GiB upload and download through the gateway, and a 2 h conversion.

    uv run python bench/memory.py [--gib 2] [--hours 2]

File backend, MAX_UPLOAD_BYTES raised to fit. The upload is a valid MP4 (a 10 s clip followed
by one sparse `free` box up to the size), sent with curl; it converts in a moment. The job's
output blob is then replaced by the 2 GiB source itself (through shared.blobstore, a hard link)
so that GET /v1/jobs/{id}/download streams 2 GiB through the gateway's real download path.
The gateway's growth is its VmHWM (peak RSS) after both transfers minus its VmRSS before them
(after a warm-up job); target < 64 MiB. Then a 2 h low-res video is converted: the converter's
peak RSS (sampled VmRSS and its VmHWM) must stay < 200 MiB; FFmpeg's own peak and that of the
libav process that read the upload (shared/media/child.py) are reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    GIB,
    MIB,
    RssSampler,
    bench_stack,
    curl_download,
    curl_upload,
    dependencies,
    h264_aac,
    login,
    long_video,
    padded_mp4,
    rss_kib,
    table,
    upload,
    verdict,
    wait_job,
    write_results,
)
from shared.blobstore import FileBlobStore

GATEWAY_LIMIT_MIB = 64
CONVERTER_LIMIT_MIB = 200


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--hours", type=float, default=2.0)
    args = parser.parse_args(argv)
    size = int(args.gib * GIB)
    long_src = long_video(int(args.hours * 3600))
    result: dict[str, Any] = {}
    with dependencies() as deps, tempfile.TemporaryDirectory(prefix="memory-") as tmp:
        big = padded_mp4(size, Path(tmp))
        env = {"MAX_UPLOAD_BYTES": str(size + 64 * MIB)}
        async with (
            bench_stack(deps, "file", **env) as bs,
            httpx.AsyncClient(base_url=bs.url, timeout=900) as client,
        ):
            token = await login(client)
            auth = {"authorization": f"Bearer {token}"}
            gw, conv = bs.pid("gateway"), bs.pid("converter")
            # Warm-up: one small job end to end, downloaded, so lazy imports and pools exist.
            job_id, _, _ = await upload(client, token, h264_aac(10))
            await wait_job(client, token, job_id)
            await client.get(f"/v1/jobs/{job_id}/download", headers=auth)
            before = rss_kib(gw)

            with RssSampler(gw) as gw_sampler:
                job_id, up_s = await asyncio.to_thread(curl_upload, bs.url, token, big)
                after_upload = rss_kib(gw)
                job = await wait_job(client, token, job_id)
                assert job["status"] == "completed", job
                store = FileBlobStore(bs.blob_dir)
                await store.write_file(await bs.output_blob_id(job_id), big)
                got, down_s = await asyncio.to_thread(
                    curl_download, f"{bs.url}/v1/jobs/{job_id}/download", token
                )
                assert got == size, (got, size)
            after = rss_kib(gw)
            growth_mib = (max(after["VmHWM"], gw_sampler.peak_kib) - before["VmRSS"]) / 1024
            await client.delete(f"/v1/jobs/{job_id}", headers=auth)

            conv_before = rss_kib(conv)
            with RssSampler(conv) as conv_sampler:
                started = time.monotonic()
                job_id, _, _ = await upload(client, token, long_src)
                job = await wait_job(client, token, job_id, timeout=900)
                convert_s = time.monotonic() - started
            assert job["status"] == "completed", job
            conv_after = rss_kib(conv)
            conv_peak_mib = max(conv_after["VmHWM"], conv_sampler.peak_kib) / 1024
            result = {
                "backend": "file",
                "transfer_bytes": size,
                "gateway": {
                    "rss_before_mib": round(before["VmRSS"] / 1024, 1),
                    "rss_after_upload_mib": round(after_upload["VmRSS"] / 1024, 1),
                    "rss_after_mib": round(after["VmRSS"] / 1024, 1),
                    "hwm_after_mib": round(after["VmHWM"] / 1024, 1),
                    "growth_mib": round(growth_mib, 1),
                    "limit_mib": GATEWAY_LIMIT_MIB,
                    "meets_target": growth_mib < GATEWAY_LIMIT_MIB,
                    "upload_s": round(up_s, 2),
                    "download_s": round(down_s, 2),
                },
                "converter": {
                    "input": f"{args.hours:g} h, 64x48 1 fps H.264 + 22.05 kHz mono AAC",
                    "input_bytes": long_src.stat().st_size,
                    "rss_before_mib": round(conv_before["VmRSS"] / 1024, 1),
                    "peak_rss_mib": round(conv_peak_mib, 1),
                    "ffmpeg_peak_rss_mib": round(conv_sampler.peak_child_kib / 1024, 1),
                    "libav_process_peak_rss_mib": round(conv_sampler.peak_libav_kib / 1024, 1),
                    "limit_mib": CONVERTER_LIMIT_MIB,
                    "meets_target": conv_peak_mib < CONVERTER_LIMIT_MIB,
                    "job_s": round(convert_s, 2),
                    "output_bytes": job["output"]["size"],
                },
            }
    g, c = result["gateway"], result["converter"]
    print(f"memory: {args.gib:g} GiB upload + download (file backend), {args.hours:g} h conversion")
    print(
        table(
            ["process", "measure", "MiB", "limit", "", "detail"],
            [
                [
                    "gateway",
                    "RSS growth",
                    g["growth_mib"],
                    GATEWAY_LIMIT_MIB,
                    verdict(g["meets_target"]),
                    f"before {g['rss_before_mib']} / peak {g['hwm_after_mib']} MiB; "
                    f"up {g['upload_s']} s, down {g['download_s']} s",
                ],
                [
                    "converter",
                    "peak RSS",
                    c["peak_rss_mib"],
                    CONVERTER_LIMIT_MIB,
                    verdict(c["meets_target"]),
                    f"FFmpeg child peak {c['ffmpeg_peak_rss_mib']} MiB, libav process "
                    f"{c['libav_process_peak_rss_mib']} MiB; job {c['job_s']} s",
                ],
            ],
        )
    )
    write_results("memory", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
