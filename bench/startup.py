"""Time from the README's run command to `ready`: cold (fresh clone, empty package cache) and warm.

    uv run python bench/startup.py [--warm N] [--baseline REF]

Cold: a fresh `git clone` of this repository's HEAD and an empty UV_CACHE_DIR, so every package
comes from PyPI. Warm: the same clone run again, as a user's next start (environment, cache and
VAR_DIR in place). Each run is the clone's own README command verbatim, on free ports and an
AMQP prefix of the benchmark's own, stopped with SIGINT once it prints `ready`; its queues are
deleted at the end. --baseline REF measures that commit the same way first (e.g. the commit
before a change), so both meet the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AMQP_URL, REPO, machine, median, table, write_results
from tests.support.amqp import delete_topology
from tests.support.net import free_port
from tests.support.procs import cpu_seconds

COLD_TARGET = 40.0
WARM_TARGET = 8.0
READY_TIMEOUT = 300.0
# What a newcomer's shell would not have: ours would point uv at this repository's environment
# or at our test dependencies.
UNSET = ("VIRTUAL_ENV", "AMQP_PREFIX", "MONGO_URL", "SMTP_URL", "DATABASE_URL", "VAR_DIR")


def readme_run_command(repo: Path = REPO) -> str:
    """The one command of the README's "Run it" section."""
    text = (repo / "README.md").read_text()
    section = text.split("## Run it", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match, "no ```sh block in the README's Run it section"
    return match.group(1).strip()


async def time_to_ready(
    clone: Path, env: dict[str, str], var_dir: Path
) -> tuple[float, float, str]:
    """Seconds from the command's start to `ready`, the CPU seconds all its processes spent
    until then (what a busy machine cannot shrink), and everything it printed."""
    ports = {name: str(free_port()) for name in ("GATEWAY", "AUTH", "NOTIFICATION", "CONVERTER")}
    run_env = {**env, "VAR_DIR": str(var_dir), **{f"{k}_PORT": v for k, v in ports.items()}}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", readme_run_command(clone),
        cwd=clone, env=run_env, start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    elapsed = cpu = float("nan")
    try:
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
            if not line:
                raise RuntimeError("the command ended before `ready`:\n" + "".join(lines))
            # Each line with its time since the start: where a slow start spends it.
            lines.append(f"{time.monotonic() - started:6.1f}s {line.decode(errors='replace')}")
            if "video2mp3: ready." in lines[-1]:
                elapsed = time.monotonic() - started
                cpu = cpu_seconds(proc.pid)
                break
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        lines.append(rest.decode(errors="replace"))
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return elapsed, cpu, "".join(lines)


def newcomer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    venv = os.environ.get("VIRTUAL_ENV", str(REPO / ".venv"))
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
    )
    env["AMQP_URL"] = AMQP_URL
    return env


async def measure(ref: str, warm_runs: int, root: Path) -> dict[str, Any]:
    """Cold and warm starts of `ref` in a fresh clone with a package cache of its own."""
    clone = root / "clone"
    await asyncio.to_thread(
        subprocess.run, ["git", "clone", "--quiet", str(REPO), str(clone)], check=True
    )
    await asyncio.to_thread(
        subprocess.run, ["git", "-C", str(clone), "checkout", "--quiet", ref], check=True
    )
    prefix = f"bench-startup-{uuid.uuid4().hex[:8]}"
    env = {**newcomer_env(), "UV_CACHE_DIR": str(root / "uv-cache"), "AMQP_PREFIX": prefix}
    result: dict[str, Any] = {"ref": ref, "command": readme_run_command(clone)}
    try:
        cold, cpu, output = await time_to_ready(clone, env, root / "var")
        print(output)
        result.update(cold_seconds=round(cold, 1), cold_cpu_seconds=round(cpu, 1))
        result["cold_output"] = output
        # uv's own line "Installed N packages in …": the part of a cold start that is
        # downloading and installing.
        installed = re.search(r"^\s*([\d.]+)s Installed (\d+) packages", output, re.M)
        if installed:
            result["cold_installed_at_seconds"] = float(installed.group(1))
            result["cold_packages"] = int(installed.group(2))
        warm, warm_cpu = [], []
        for _ in range(warm_runs):
            seconds, cpu, output = await time_to_ready(clone, env, root / "var")
            warm.append(round(seconds, 1))
            warm_cpu.append(round(cpu, 1))
        print(output)
        result.update(warm_seconds=warm, warm_cpu_seconds=warm_cpu)
        result["load_average"] = [round(x, 1) for x in os.getloadavg()]
    finally:
        await delete_topology(AMQP_URL, prefix)
    return result


def rows(name: str, result: dict[str, Any]) -> list[list[object]]:
    found: list[list[object]] = [
        [name, "cold", result["cold_seconds"], result["cold_cpu_seconds"], f"≤ {COLD_TARGET:.0f}"]
    ]
    if "cold_packages" in result:
        packages = f"{result['cold_packages']} packages installed"
        found.append([name, packages, result["cold_installed_at_seconds"], "", ""])
    if result["warm_seconds"]:
        warm, cpu = median(result["warm_seconds"]), median(result["warm_cpu_seconds"])
        found.append([name, "warm (median)", warm, cpu, f"≤ {WARM_TARGET:.0f}"])
    return found


def git_head() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--baseline", default=None, help="a commit to measure first, likewise")
    args = parser.parse_args()
    head = await asyncio.to_thread(git_head)
    results: dict[str, Any] = {"machine": machine()}
    for name, ref in (("baseline", args.baseline), ("this", head)):
        if ref is None:
            continue
        root = Path(tempfile.mkdtemp(prefix="v2m-startup-"))
        try:
            results[name] = await measure(ref, args.warm, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    table_rows = [
        row
        for name in ("baseline", "this")
        if name in results
        for row in rows(f"{name} ({results[name]['ref']})", results[name])
    ]
    print(table(["commit", "start", "seconds to ready", "CPU seconds", "target"], table_rows))
    write_results("startup", results)


if __name__ == "__main__":
    asyncio.run(main())
