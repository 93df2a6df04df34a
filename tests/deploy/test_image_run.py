"""The image itself: built by deploy/build-image.sh, measured, then run the way compose.yaml runs
it (its user, read-only root, /tmp on tmpfs, its volumes and environment names) for one whole
job against the host's RabbitMQ, MariaDB, a MongoDB-wire server and an SMTP catcher.

Selected with `-m image` (it is also `slow`, so the default run leaves it out); `.ci/run` runs it
with VIDEO2MP3_IMAGE_REQUIRED=1, which turns "no container engine here" into a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.auth.migrate import alembic_config
from shared.ffmpeg_path import ffmpeg_executable
from tests.deploy.conftest import DEPLOY, ROOT
from tests.deploy.test_compose_stack import COMPOSE, ENV_EXAMPLE, interpolate, read_env_file
from tests.e2e.conftest import register_and_login
from tests.e2e.test_accounts import job_mail_to, prove_address
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.support.amqp import delete_topology
from tests.support.mariadb import create_database, drop_database
from tests.support.media import decode
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher, download_link

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(2400)]

BUILD_SCRIPT = DEPLOY / "build-image.sh"
TAG = "localhost/video2mp3:test"
MAX_ADDED_BYTES = 480 * 1000**2
SERVICES = ("auth", "notification", "converter", "gateway")
BASE_LABEL = "org.opencontainers.image.base.name"


def engine(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The container engine, configured as the build script configured it for this host."""
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), "engine", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def engine_ok(*args: str, timeout: float = 180) -> str:
    result = engine(*args, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result.stdout


def inspect(kind: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(engine_ok(kind, "inspect", name))
    return found[0]


def in_image(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    """A command in a throwaway container of the image, as root and without a network."""
    return engine(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", command[0], image,
        *command[1:],
    )  # fmt: skip


@pytest.fixture(scope="module")
def image() -> str:
    can_install = os.geteuid() == 0 and shutil.which("apt-get")
    if not (shutil.which("docker") or shutil.which("podman") or can_install):
        if os.environ.get("VIDEO2MP3_IMAGE_REQUIRED") == "1":
            pytest.fail("no container engine, and none can be installed here")
        pytest.skip("no container engine (docker or podman) here")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), TAG],
        capture_output=True,
        text=True,
        timeout=2000,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    print(f"\nimage {TAG} built in {time.monotonic() - started:.0f} s")
    return TAG


def test_labels_name_the_base_and_the_source(image: str) -> None:
    labels = inspect("image", image)["Config"]["Labels"]
    base = labels[BASE_LABEL]
    assert base, "no base image named"
    inspect("image", base)  # the base the label names is the one the build used
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    revision = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if revision.returncode == 0:
        assert labels["org.opencontainers.image.revision"] == revision.stdout.strip()
    assert labels["org.opencontainers.image.source"]


def test_adds_at_most_480_mb_to_its_base(image: str) -> None:
    size = int(inspect("image", image)["Size"])
    base_name = inspect("image", image)["Config"]["Labels"][BASE_LABEL]
    base = int(inspect("image", base_name)["Size"])
    added = size - base
    print(f"\nimage {size / 1e6:.1f} MB, base {base / 1e6:.1f} MB, added {added / 1e6:.1f} MB")
    assert added <= MAX_ADDED_BYTES, f"the image adds {added / 1e6:.1f} MB to {base_name}"


def test_one_ffmpeg_the_one_the_tests_run(image: str) -> None:
    found = in_image(
        image, "find", "/", "-xdev", "(", "-name", "ffmpeg*", "-o", "-name", "ffprobe*", ")",
        "-type", "f", "-perm", "-u+x",
    )  # fmt: skip
    binaries = found.stdout.split()
    assert len(binaries) == 1, binaries
    resolved = in_image(
        image, "python", "-c",
        "from shared.ffmpeg_path import ffmpeg_executable; print(ffmpeg_executable())",
    )  # fmt: skip
    assert resolved.stdout.strip() == binaries[0], resolved.stderr
    inside = in_image(image, "sha256sum", binaries[0]).stdout.split()[0]
    here = hashlib.sha256(Path(ffmpeg_executable()).read_bytes()).hexdigest()
    assert inside == here, "the image's FFmpeg is not the build the tests run"
    version = in_image(image, binaries[0], "-hide_banner", "-version").stdout.splitlines()[0]
    print(f"\nFFmpeg in the image: {version}")


def _runtime_distributions() -> set[str]:
    exported = subprocess.run(
        ["uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    names = {re.split(r"[=<>;\s\[]", line, maxsplit=1)[0] for line in exported.splitlines()}
    return {_canonical(n) for n in names if n and not n.startswith(("#", "-"))}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_runtime_only_no_compilers_no_package_lists_not_root(image: str) -> None:
    names = "import importlib.metadata as m; print(*(d.name for d in m.distributions()))"
    listed = in_image(image, "/opt/venv/bin/python", "-c", names)
    installed = {_canonical(n) for n in listed.stdout.split()}
    assert "pytest" not in installed
    assert installed - {"video2mp3"} <= _runtime_distributions(), "not runtime dependencies"
    tools = in_image(image, "sh", "-c", "for t in gcc cc c++ make uv; do command -v $t; done")
    assert tools.stdout.strip() == "", tools.stdout
    lists = in_image(image, "find", "/var/lib/apt/lists", "-type", "f")
    assert lists.stdout.strip() == "", lists.stdout
    config = inspect("image", image)["Config"]
    assert config["User"].split(":")[0] not in ("", "0", "root")


def test_the_build_leaves_the_ca_bundle_as_the_base_has_it(image: str) -> None:
    """The host's bundle (with an intercepting proxy's CA, here) reaches the build as a secret
    mount only: no layer keeps it."""
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    base = inspect("image", image)["Config"]["Labels"][BASE_LABEL]
    ours = in_image(image, "sha256sum", bundle).stdout.split()[:1]
    theirs = in_image(base, "sha256sum", bundle).stdout.split()[:1]
    assert ours == theirs


def test_healthcheck_is_configured_and_fails_without_a_service(image: str) -> None:
    described = inspect("image", image)
    # Docker keeps it in Config, podman beside it.
    health: dict[str, Any] = described["Config"].get("Healthcheck") or described["Healthcheck"]
    assert health["Test"] == ["CMD", "video2mp3-healthcheck"]
    result = engine("run", "--rm", "--network", "none", "--entrypoint", health["Test"][1], image)
    assert result.returncode == 1, result.stderr


# ---- the whole job ----------------------------------------------------------------------------


@dataclass
class Containers:
    """The stack's containers and volumes, named after the run so that nothing is shared."""

    tag: str
    names: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)

    def volume(self, name: str) -> str:
        full = f"v2m-{self.tag}-{name}"
        if full not in self.volumes:
            engine_ok("volume", "create", full)
            self.volumes.append(full)
        return full

    def logs(self, service: str) -> str:
        result = engine("logs", "--tail", "60", self.names[service])
        return (result.stdout + result.stderr)[-4000:]

    def remove(self) -> None:
        for name in self.names.values():
            engine("rm", "-f", "-v", name, timeout=120)
        for volume in self.volumes:
            engine("volume", "rm", "-f", volume)


def compose_services() -> dict[str, Any]:
    """compose.yaml as `docker compose config` shows it with .env.example as the .env, its
    required secrets filled in (optional values stay empty, as a user would leave them)."""
    text = COMPOSE.read_text()
    env = read_env_file(ENV_EXAMPLE.read_text())
    env |= {n: f"test-{n.lower()}" for n in re.findall(r"\$\{(\w+):\?", text) if not env.get(n)}
    services: dict[str, Any] = interpolate(yaml.safe_load(text), env)["services"]
    return services


def compose_app(service: str) -> dict[str, Any]:
    spec: dict[str, Any] = compose_services()[service]
    return spec


def run_args(containers: Containers, service: str, env: dict[str, str], image: str) -> list[str]:
    """`run` arguments for one service from its compose.yaml entry: same user, read-only root,
    tmpfs, volumes and environment names; host network, so ports are the test's own."""
    spec = compose_app(service)
    args = ["run", "-d", "--name", containers.names[service], "--network", "host"]
    args += ["--user", spec["user"]]
    if spec.get("read_only"):
        args.append("--read-only")
        if "podman" in engine_ok("--version").lower():
            args.append("--read-only-tmpfs=false")  # podman's own default adds more tmpfs
    for path in spec.get("tmpfs", []):
        args += ["--tmpfs", path]
    for volume in spec.get("volumes", []):
        source, *target = volume.split(":")
        args += ["-v", ":".join([containers.volume(source), *target]) if target else source]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return [*args, image, *spec["command"]]


def service_env(service: str, overrides: dict[str, str]) -> dict[str, str]:
    """compose.yaml's environment for the service, its other containers' addresses replaced."""
    env = {k: str(v) for k, v in compose_app(service)["environment"].items()}
    env.update({k: v for k, v in overrides.items() if k in env})
    hosts = set(compose_services())
    for name, value in env.items():
        assert not any(f"//{h}:" in value or f"@{h}:" in value for h in hosts), (name, value)
    return env


async def wait_ready(containers: Containers, service: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=3) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            state = (await asyncio.to_thread(inspect, "container", containers.names[service]))[
                "State"
            ]
            assert state["Running"], f"{service} exited: {containers.logs(service)}"
            await asyncio.sleep(0.5)
    raise AssertionError(f"{service} not ready in {timeout} s: {containers.logs(service)}")


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCatcher]:
    async with SmtpCatcher() as catcher:
        yield catcher


@pytest.fixture
async def mariadb() -> AsyncIterator[str]:
    name, url = await create_database("v2m_image")
    yield url
    await drop_database(name)


@pytest.fixture
def containers() -> Iterator[Containers]:
    running = Containers(uuid.uuid4().hex[:10])
    running.names = {s: f"v2m-{running.tag}-{s}" for s in SERVICES}
    try:
        yield running
    finally:
        running.remove()


async def test_a_whole_job_through_the_containers(
    image: str,
    containers: Containers,
    mongo_url: str,
    amqp_url: str,
    mariadb: str,
    smtp: SmtpCatcher,
    shared_media: Path,
    tmp_path: Path,
) -> None:
    ports = {s: free_port() for s in SERVICES}
    urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    prefix = f"test-image-{containers.tag}"
    overrides = {
        "AMQP_URL": amqp_url,
        "MONGO_URL": mongo_url,
        "DATABASE_URL": mariadb,
        "SMTP_URL": smtp.url,
        "PUBLIC_URL": urls["gateway"],
        "AUTH_URLS": urls["auth"],
        "NOTIFICATION_URLS": urls["notification"],
        # compose ships invite-only sign-ups; this test signs up as anyone may under `open`.
        "REGISTRATION": "open",
    }
    try:
        for service in SERVICES:
            env = service_env(service, overrides)
            # What the test adds: its own broker names and database, and free ports.
            env |= {
                "AMQP_PREFIX": prefix,
                "MONGO_DB": f"image{containers.tag}",
                f"{service.upper()}_PORT": str(ports[service]),
            }
            await asyncio.to_thread(engine_ok, *run_args(containers, service, env, image))
        for service in SERVICES:
            await wait_ready(containers, service, urls[service])

        for service in SERVICES:
            name = containers.names[service]
            health = await asyncio.to_thread(engine, "exec", name, "video2mp3-healthcheck")
            assert health.returncode == 0, (service, health.stderr)
            uid = await asyncio.to_thread(engine_ok, "exec", name, "id", "-u")
            assert uid.strip() == "10001"
            write = await asyncio.to_thread(engine, "exec", name, "touch", "/opt/venv/x")
            assert write.returncode != 0, "the root filesystem is writable"

        async with httpx.AsyncClient(base_url=urls["gateway"], timeout=30) as client:
            # Job mails go only to proven addresses: follow the verification mail first.
            user = await prove_address(client, smtp, await register_and_login(client))
            response = await upload(client, user, shared_media / "bigbuckbunny.mp4")
            assert response.status_code == 202, response.text
            job = await wait_final(client, user, response.json()["id"], timeout=180)
            assert job["status"] == "completed", (job, containers.logs("converter"))
            mp3 = await client.get(job["output"]["download_url"], headers=auth(user))
            assert mp3.status_code == 200
            (tmp_path / "bbb.mp3").write_bytes(mp3.content)
            decoded = decode(tmp_path / "bbb.mp3")
            assert (decoded.codec, decoded.channels) == ("mp3", 2)
            assert abs(decoded.duration - 5.3) < 0.2

            message = await job_mail_to(smtp, user["email"], timeout=60)
            by_link = await client.get(download_link(message))
            assert by_link.status_code == 200
            assert by_link.content == mp3.content

        # The empty database got its schema from the auth container's migrations.
        engine_ = create_async_engine(mariadb)
        try:
            async with engine_.connect() as connection:
                version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        finally:
            await engine_.dispose()
        assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()

        # SIGTERM, then the engine's SIGKILL only after the grace compose.yaml gives.
        for service in reversed(SERVICES):
            grace = int(str(compose_app(service).get("stop_grace_period", "10s")).rstrip("s"))
            started = time.monotonic()
            await asyncio.to_thread(
                engine_ok, "stop", "-t", str(grace), containers.names[service], timeout=grace + 60
            )
            took = time.monotonic() - started
            state = (await asyncio.to_thread(inspect, "container", containers.names[service]))[
                "State"
            ]
            assert state["ExitCode"] == 0, (service, state, containers.logs(service))
            assert took < grace, f"{service} took {took:.1f} s to stop"
            print(f"\n{service} stopped in {took:.2f} s")
    finally:
        await delete_topology(amqp_url, prefix)
