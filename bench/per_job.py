"""CPU per job in each process of the stack, with sources so short that FFmpeg costs little.

    uv run python bench/per_job.py [--jobs 300] [--in-flight 8] [--rounds 2]

The throughput benchmark is bound by CPU: FFmpeg's ~0.45 s a job on its 60 s videos, and what
our processes spend around it. This counts the second part alone. It runs the stack on the
`file` backend, submits `--jobs` uploads of a 1 s H.264/AAC clip (`--in-flight` at a time, each
followed to its `job.completed` on a WebSocket), and reads each process's CPU time (user +
system, /proc) before and after: gateway, converter, notification, auth, nx-27017, RabbitMQ,
the libav processes (probes, output checks), and this client (uploads, WebSocket, the SMTP
catcher). FFmpeg is the converter's reaped children (a libav process retired during a run,
after its 200 requests, lands there too).
CPU time moves less with the host's load than wall time does, but it moves (runs minutes apart
differed by up to 20 % here): the last column, our CPU over FFmpeg's on the same clips, moves
less. A profiling aid with no target; JSON in bench/results/per_job.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import (
    JobWatcher,
    bench_stack,
    dependencies,
    h264_aac,
    login,
    table,
    upload,
    write_results,
)

# What identifies each process in its command line; the client is this process.
PROCESSES = {
    "gateway": "serve gateway",
    "converter": "serve converter",
    "notification": "serve notification",
    "auth": "serve auth",
    "nx-27017": "nx-27017",
    "rabbitmq": "beam.smp",
    "libav": "shared.media.child",
}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of each process in PROCESSES, of this client and of FFmpeg runs the
    converter has reaped."""
    seconds: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(entry) == os.getpid():
            name: str | None = "client"
        else:
            name = next((n for n, key in PROCESSES.items() if key in command), None)
        if name is None:
            continue
        # Fields 14-17 of stat(5): utime, stime, cutime, cstime; `fields` starts at field 3.
        own = (int(fields[11]) + int(fields[12])) / TICKS
        seconds[name] = seconds.get(name, 0.0) + own
        if name == "converter":
            children = (int(fields[13]) + int(fields[14])) / TICKS
            seconds["ffmpeg"] = seconds.get("ffmpeg", 0.0) + children
    return seconds


async def one_round(url: str, source: Path, jobs: int, in_flight: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        token = await login(client)
        async with JobWatcher(url, token) as watcher:
            for _ in range(3):  # warm every path up before counting
                job_id, _, _ = await upload(client, token, source)
                await watcher.wait(job_id)
            await asyncio.sleep(2)  # the mails of the warm-up jobs go out first
            gate = asyncio.Semaphore(in_flight)

            async def job() -> None:
                async with gate:
                    job_id, _, _ = await upload(client, token, source)
                kind, _ = await watcher.wait(job_id)
                if kind != "job.completed":
                    raise RuntimeError(f"job {job_id} ended {kind}")

            before = cpu_seconds()
            await asyncio.gather(*(job() for _ in range(jobs)))
            await asyncio.sleep(2)  # and the mails of the counted ones
            after = cpu_seconds()
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / jobs for name in after}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    source = h264_aac(1)
    rounds: list[dict[str, float]] = []
    with dependencies() as deps:
        async with bench_stack(deps, "file") as bs:
            for _ in range(args.rounds):
                rounds.append(await one_round(bs.url, source, args.jobs, args.in_flight))
    names = [*PROCESSES, "client", "ffmpeg"]
    ours = [n for n in names if n != "ffmpeg"]
    rows = [
        [
            f"round {i + 1}",
            *(round(r.get(n, 0.0), 1) for n in names),
            round(sum(r.get(n, 0.0) for n in ours), 1),
            round(sum(r.get(n, 0.0) for n in ours) / max(r.get("ffmpeg", 0.0), 1e-9), 2),
        ]
        for i, r in enumerate(rounds)
    ]
    print(f"CPU ms per job, {args.jobs} jobs of a 1 s clip, {args.in_flight} in flight")
    print(table(["", *names, "all but ffmpeg", "/ ffmpeg"], rows))
    result = {
        "jobs": args.jobs,
        "in_flight": args.in_flight,
        "cpu_ms_per_job": [{n: round(r.get(n, 0.0), 2) for n in names} for r in rounds],
    }
    write_results("per_job", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
