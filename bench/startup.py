"""Time from the README's run command to `ready`: cold (fresh clone, empty package cache) and warm.

    uv run python bench/startup.py [--warm N] [--skip-cold]

Cold: a fresh `git clone` of this repository's HEAD and an empty UV_CACHE_DIR, so every package
comes from PyPI. Warm: the same clone run again, as a user's next start (environment, cache and
VAR_DIR in place). Each run is the README's command verbatim on free ports, in a new VAR_DIR (so
the AMQP prefix it derives is its own), stopped with SIGINT once it prints `ready`; its queues
are deleted at the end.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import AMQP_URL, REPO, machine, median, table, write_results
from services.cli.up import PREFIX_FILE
from tests.support.amqp import delete_topology
from tests.support.net import free_port
from tests.support.procs import cpu_seconds

COLD_TARGET = 40.0
WARM_TARGET = 8.0
READY_TIMEOUT = 300.0
# What a newcomer's shell would not have: ours would point uv at this repository's environment
# or at our test dependencies.
UNSET = ("VIRTUAL_ENV", "AMQP_PREFIX", "MONGO_URL", "SMTP_URL", "DATABASE_URL", "VAR_DIR")


def readme_run_command() -> str:
    """The one command of the README's "Run it" section."""
    text = (REPO / "README.md").read_text()
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
        "bash", "-c", readme_run_command(),
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--skip-cold", action="store_true", help="warm runs in this checkout")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="v2m-startup-"))
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    venv = os.environ.get("VIRTUAL_ENV", str(REPO / ".venv"))
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(venv)
    )
    env["AMQP_URL"] = AMQP_URL
    results: dict[str, Any] = {"machine": machine(), "command": readme_run_command()}
    var_dir = root / "var"
    try:
        if args.skip_cold:
            clone = REPO
        else:
            clone = root / "clone"
            git = ["git", "clone", "--quiet", str(REPO), str(clone)]
            await asyncio.to_thread(subprocess.run, git, check=True)
            env["UV_CACHE_DIR"] = str(root / "uv-cache")
            cold, cpu, output = await time_to_ready(clone, env, var_dir)
            results["cold_seconds"] = round(cold, 1)
            results["cold_cpu_seconds"] = round(cpu, 1)
            results["cold_output"] = output
            # uv's own line "Installed N packages in …": the part of a cold start that is
            # downloading and installing.
            installed = re.search(r"^\s*([\d.]+)s Installed (\d+) packages", output, re.M)
            if installed:
                results["cold_installed_at_seconds"] = float(installed.group(1))
                results["cold_packages"] = int(installed.group(2))
            print(output)
        warm, warm_cpu = [], []
        for _ in range(args.warm):
            seconds, cpu, output = await time_to_ready(clone, env, var_dir)
            warm.append(round(seconds, 1))
            warm_cpu.append(round(cpu, 1))
        if warm:
            print(output)
        results["warm_seconds"] = warm
        results["warm_cpu_seconds"] = warm_cpu
        results["load_average"] = os.getloadavg()
    finally:
        prefix_file = var_dir / PREFIX_FILE
        if prefix_file.exists():
            await delete_topology(AMQP_URL, prefix_file.read_text().strip())
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    if "cold_seconds" in results:
        cold_row = [results["cold_seconds"], results["cold_cpu_seconds"]]
        rows.append(["cold", *cold_row, f"≤ {COLD_TARGET:.0f}"])
        if "cold_packages" in results:
            packages = f"{results['cold_packages']} packages installed"
            rows.append([packages, results["cold_installed_at_seconds"], "", ""])
    if warm:
        rows.append(["warm (median)", median(warm), median(warm_cpu), f"≤ {WARM_TARGET:.0f}"])
    print(table(["start", "seconds to ready", "CPU seconds", "target"], rows))
    print(f"load average at the end: {results['load_average']}")
    write_results("startup", results)


if __name__ == "__main__":
    asyncio.run(main())
