"""A login's latency, idle and during 60 parallel sign-ups, against a real auth process.

    uv run python bench/signups.py [--signups 60] [--logins 7]

Starts `video2mp3 serve auth` (SQLite under a temporary VAR_DIR), registers one user, then
times its logins: alone, during a burst of sign-ups from one client address (what one
stranger can do: the per-address sign-up limit answers most of them 429), and during a burst
from as many addresses as sign-ups (a botnet: only the bound on concurrent hashing stands in the
way). Prints the median and worst login of each and the sign-ups' answers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.support.net import free_port, wait_for_port

PASSWORD = "correct horse battery staple"


async def timed_login(client: httpx.AsyncClient, email: str) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/auth/login", data={"username": email, "password": PASSWORD})
    response.raise_for_status()
    return time.perf_counter() - started


async def sign_up(client: httpx.AsyncClient, address: str) -> int:
    response = await client.post(
        "/v1/auth/register",
        json={"email": f"burst-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD},
        headers={"X-Forwarded-For": address},
    )
    return response.status_code


async def during_burst(
    client: httpx.AsyncClient, email: str, addresses: list[str], logins: int
) -> tuple[list[float], Counter[int]]:
    burst = [asyncio.create_task(sign_up(client, address)) for address in addresses]
    await asyncio.sleep(0.05)  # the burst is in before the first login
    times = [await timed_login(client, email) for _ in range(logins)]
    return times, Counter(await asyncio.gather(*burst))


def line(name: str, times: list[float], idle: float, answers: Counter[int] | None = None) -> str:
    median = statistics.median(times)
    text = f"{name:<34} median {median:6.3f} s ({median / idle:4.2f}x idle)"
    text += f"  worst {max(times):.3f} s"
    text += " [" + " ".join(f"{t:.2f}" for t in times) + "]"
    if answers:
        text += "  sign-ups: " + ", ".join(f"{n}x {s}" for s, n in sorted(answers.items()))
    return text


async def run(signups: int, logins: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-signups-") as var_dir:
        port = free_port()
        env = {
            **os.environ,
            "VAR_DIR": var_dir,
            "DATABASE_URL": "",
            "LOG_LEVEL": "WARNING",
            "TRUSTED_PROXIES": "127.0.0.1",
        }
        env.pop("DATABASE_URL")
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [sys.executable, "-m", "services.cli.main", "serve", "auth", "--port", str(port)],
            env=env,
        )
        try:
            wait_for_port(port, timeout=60)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
                registered = await client.post(
                    "/v1/auth/register", json={"email": email, "password": PASSWORD}
                )
                registered.raise_for_status()
                await timed_login(client, email)  # warm
                idle_times = [await timed_login(client, email) for _ in range(logins)]
                idle = statistics.median(idle_times)
                one, one_answers = await during_burst(client, email, ["10.9.9.9"] * signups, logins)
                many_addresses = [f"10.8.{i // 250}.{i % 250 + 1}" for i in range(signups)]
                many, many_answers = await during_burst(client, email, many_addresses, logins)
                print(f"login latency, {logins} logins each, auth on SQLite, {os.cpu_count()} CPUs")
                print(line("idle", idle_times, idle))
                print(line(f"{signups} sign-ups from one address", one, idle, one_answers))
                spread = f"{signups} sign-ups from {signups} addresses"
                print(line(spread, many, idle, many_answers))
        finally:
            server.terminate()
            server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signups", type=int, default=60)
    parser.add_argument("--logins", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.signups, args.logins))


if __name__ == "__main__":
    main()
