"""API under load: GET /v1/jobs/{id} against a bare FastAPI endpoint, and WebSocket fan-out.

    uv run python bench/api.py [--duration 10] [--connections 32] [--clients 500] [--jobs 10]

Load generator: `wrk` (one thread, `--connections` keep-alive connections, `--latency`) when it
is on PATH (`apt-get install wrk`), else a built-in asyncio client (raw HTTP/1.1 keep-alive,
uvloop). The same generator and settings hit (1) the gateway's GET /v1/jobs/{id} (JWT check +
MongoDB read on nx-27017), (2) the gateway's /healthz (framework only) and (3) a bare FastAPI
app under the same uvicorn settings (bench/bare_app.py). Fan-out: `--clients` WebSockets spread
over `--jobs` users (one job each, a 600 s video), and each event's delay is its receipt time
minus its `occurred_at`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import websockets

from bench.common import (
    REPO,
    bench_stack,
    dependencies,
    h264_aac,
    login,
    percentile,
    table,
    upload,
    write_results,
    ws_url,
)
from tests.support.net import free_port, wait_for_port

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, headers: dict[str, str], duration: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


async def pyload(
    url: str, headers: dict[str, str], duration: int, connections: int
) -> dict[str, float]:
    """Raw HTTP/1.1 keep-alive GETs from `connections` asyncio connections."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n{head}\r\n".encode()
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.monotonic() < stop:
            t = time.perf_counter()
            writer.write(request)
            status_headers = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", status_headers).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - t) * 1000)
            if not status_headers.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": float(errors),
    }


async def load(
    url: str, headers: dict[str, str], duration: int, connections: int
) -> dict[str, float]:
    if shutil.which("wrk"):
        return await asyncio.to_thread(wrk, url, headers, duration, connections)
    return await pyload(url, headers, duration, connections)


@contextlib.contextmanager
def bare_server() -> Any:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=str(REPO),
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def fanout(base: str, clients: int, jobs: int) -> dict[str, Any]:
    source = h264_aac(600)
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        tokens = [await login(client) for _ in range(jobs)]
        delays: list[float] = []
        received = 0
        ready = 0
        all_ready = asyncio.Event()
        done = asyncio.Event()
        finished: set[int] = set()

        async def listen(i: int) -> None:
            nonlocal received, ready
            user = i % jobs
            async with websockets.connect(
                ws_url(base, tokens[user]), max_size=None, open_timeout=120
            ) as ws:
                async for raw in ws:
                    now = time.time()
                    message = json.loads(raw)
                    if message["type"] == "snapshot":
                        ready += 1
                        if ready == clients:
                            all_ready.set()
                        continue
                    if "occurred_at" in message:
                        occurred = datetime.datetime.fromisoformat(message["occurred_at"])
                        delays.append((now - occurred.timestamp()) * 1000)
                        received += 1
                    if message["type"] in ("job.completed", "job.failed"):
                        finished.add(i)
                        if len(finished) == clients:
                            done.set()
                        return

        listeners = []
        for i in range(clients):
            listeners.append(asyncio.create_task(listen(i)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_ready.wait(), 300)
        await asyncio.gather(*(upload(client, tokens[u], source) for u in range(jobs)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 300)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    return {
        "clients": clients,
        "jobs": jobs,
        "events_received": received,
        "clients_finished": len(finished),
        "delay_p50_ms": round(percentile(delays, 50), 1),
        "delay_p99_ms": round(percentile(delays, 99), 1),
        "delay_max_ms": round(max(delays, default=float("nan")), 1),
    }


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=10)
    args = parser.parse_args(argv)
    generator = "wrk -t1" if shutil.which("wrk") else "asyncio raw HTTP/1.1 client"
    with dependencies() as deps:
        async with bench_stack(deps, "file") as bs:
            async with httpx.AsyncClient(base_url=bs.url, timeout=120) as client:
                token = await login(client)
                job_id, _, _ = await upload(client, token, h264_aac(10))
            headers = {"Authorization": f"Bearer {token}"}
            job = await load(f"{bs.url}/v1/jobs/{job_id}", headers, args.duration, args.connections)
            health = await load(f"{bs.url}/healthz", {}, args.duration, args.connections)
            with bare_server() as bare_url:
                bare = await load(
                    f"{bare_url}/v1/jobs/{job_id}", {}, args.duration, args.connections
                )
            fan = await fanout(bs.url, args.clients, args.jobs)
    ratio = job["rps"] / bare["rps"]
    result = {
        "generator": generator,
        "connections": args.connections,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "status_endpoint": {k: round(v, 2) for k, v in job.items()},
        "healthz": {k: round(v, 2) for k, v in health.items()},
        "bare_fastapi": {k: round(v, 2) for k, v in bare.items()},
        "throughput_ratio": round(ratio, 3),
        "fanout": fan,
    }
    print(f"api: {generator}, {args.connections} connections, {args.duration} s each")
    print(
        table(
            ["endpoint", "req/s", "ratio to bare", "p50 ms", "p99 ms", "errors"],
            [
                [
                    name,
                    round(r["rps"]),
                    round(r["rps"] / bare["rps"], 3),
                    r["p50_ms"],
                    r["p99_ms"],
                    int(r["errors"]),
                ]
                for name, r in (
                    ("GET /v1/jobs/{id}", job),
                    ("GET /healthz", health),
                    ("bare FastAPI", bare),
                )
            ],
        )
    )
    print(
        f"fan-out: {fan['clients']} WebSockets, {fan['jobs']} jobs: {fan['events_received']} "
        f"events, delay p50 {fan['delay_p50_ms']} ms, p99 {fan['delay_p99_ms']} ms, "
        f"max {fan['delay_max_ms']} ms; {fan['clients_finished']}/{fan['clients']} saw the end"
    )
    write_results("api", result)
    return result


if __name__ == "__main__":
    asyncio.run(main())
