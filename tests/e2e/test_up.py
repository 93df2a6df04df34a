"""`video2mp3 up` as a newcomer runs it: embedded MongoDB-wire server, SQLite and mail sink."""

from __future__ import annotations

import asyncio
import contextlib
import email
import os
import re
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.cli.embedded import port_is_free
from services.cli.up import PREFIX_FILE
from shared.topology import Topology, declare_topology
from tests.support.amqp import delete_topology
from tests.support.media import MediaFactory, decode
from tests.support.net import free_port
from tests.support.procs import alive, children_of
from tests.support.stack import running_stack

SERVICES = ("GATEWAY", "AUTH", "NOTIFICATION", "CONVERTER")


async def read_until(
    stream: asyncio.StreamReader, needle: str, seen: list[str], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"`{needle}` not printed; got: {''.join(seen)[-3000:]}"
        line = await asyncio.wait_for(stream.readline(), remaining)
        assert line, f"`up` ended early: {''.join(seen)[-3000:]}"
        seen.append(line.decode(errors="replace"))


def up_env(
    amqp_url: str, var_dir: Path, prefix: str | None, ports: dict[str, int]
) -> dict[str, str]:
    """`up` as a newcomer runs it: no MONGO_URL, DATABASE_URL or SMTP_URL (the embedded ones),
    no AUTH_URLS, NOTIFICATION_URLS or PUBLIC_URL (derived from the ports); its own var dir and
    ports (keys as in SERVICES), and the AMQP prefix given (None: the one `up` derives)."""
    unset = (
        "MONGO_URL",
        "SMTP_URL",
        "DATABASE_URL",
        "AUTH_URLS",
        "NOTIFICATION_URLS",
        "PUBLIC_URL",
        "AMQP_PREFIX",
    )
    env = {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "VAR_DIR": str(var_dir),
        "AMQP_URL": amqp_url,
        **{f"{name}_PORT": str(port) for name, port in ports.items()},
    }
    if prefix is not None:
        env["AMQP_PREFIX"] = prefix
    # These tests count job mails; proving addresses first is tests/e2e/test_accounts.py's part.
    env["VERIFY_EMAILS"] = "false"
    return env


def assert_quiet(output: str) -> None:
    """No warning, error or traceback, and no INFO line of a library: only our own loggers."""
    assert "Traceback" not in output, output
    assert "KeyboardInterrupt" not in output, output
    assert "WARNING" not in output, output
    assert "ERROR" not in output, output
    for logger in re.findall(r" [a-z]+ INFO (\S+) \[", output):
        assert logger.startswith(("services.", "shared.")), output


async def launch_up(env: dict[str, str]) -> asyncio.subprocess.Process:
    """`video2mp3 up` in a session of its own (its group can be signalled), output piped."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "up",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc


async def test_up_runs_everything_and_stops_on_ctrl_c(
    amqp_url: str, shared_media: Path, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in SERVICES}
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    proc = await launch_up(up_env(amqp_url, tmp_path / "var", prefix, ports))
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        await read_until(proc.stdout, "video2mp3: ready.", seen, 120)
        api = f"http://127.0.0.1:{ports['GATEWAY']}"
        async with httpx.AsyncClient(base_url=api, timeout=30) as client:
            creds = {"email": "newcomer@example.com", "password": "correct horse battery"}
            assert (await client.post("/v1/auth/register", json=creds)).status_code == 201
            login = await client.post(
                "/v1/auth/login", data={"username": creds["email"], "password": creds["password"]}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            with (shared_media / "bigbuckbunny.mp4").open("rb") as f:
                created = await client.post("/v1/jobs", headers=headers, files={"file": f})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            await read_until(proc.stdout, "mail to newcomer@example.com", seen, 60)
            job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
            assert job["status"] == "completed"
            mp3 = await client.get(f"/v1/jobs/{job_id}/download", headers=headers)
            (tmp_path / "out.mp3").write_bytes(mp3.content)
            assert decode(tmp_path / "out.mp3").channels == 2
        assert list((tmp_path / "var" / "mail").glob("*.eml"))
        assert (tmp_path / "var" / "secrets" / "link.key").stat().st_mode & 0o777 == 0o600
        # Ctrl-C reaches the whole foreground process group, as in a terminal.
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        # Alembic's 7 INFO lines, uvicorn's and httpx's, and a KeyboardInterrupt traceback
        # from each FFmpeg helper process were printed here.
        assert_quiet("".join(seen) + rest.decode(errors="replace"))
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await delete_topology(amqp_url, prefix)


async def test_up_without_rabbitmq_says_so(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "up",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "RabbitMQ is not reachable" in out.decode()


async def test_a_second_up_on_taken_ports_says_so(amqp_url: str, tmp_path: Path) -> None:
    # Another `up` (here: anything) listens on the gateway's port. Before, the new `up` took the
    # other's answers for its own readiness, said "ready", and restarted its services forever.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "VAR_DIR": str(tmp_path),
            "AMQP_URL": amqp_url,
            "GATEWAY_PORT": str(port),
            "AUTH_PORT": str(free_port()),
            "NOTIFICATION_PORT": str(free_port()),
            "CONVERTER_PORT": str(free_port()),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "up",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"gateway port {port} in use" in out.decode()
    assert "video2mp3: ready." not in out.decode()


async def test_a_stop_while_starting_is_obeyed(amqp_url: str, tmp_path: Path) -> None:
    # SIGTERM during start-up waited until all four services were up and "ready" was printed.
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in SERVICES}
    proc = await launch_up(up_env(amqp_url, tmp_path / "var", prefix, ports))
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        await read_until(proc.stdout, "embedded mail sink", seen, 60)
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert time.monotonic() - stopped_at < 15
        assert "video2mp3: ready." not in "".join(seen) + out.decode()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        await delete_topology(amqp_url, prefix)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
async def test_killing_up_outright_takes_its_services_with_it(
    amqp_url: str, tmp_path: Path
) -> None:
    # `up` killed with SIGKILL (or by the OOM killer): its four services and nx-27017 lived on,
    # holding the ports the next `up` needs.
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in SERVICES}
    proc = await launch_up(up_env(amqp_url, tmp_path / "var", prefix, ports))
    assert proc.stdout is not None
    children: list[int] = []
    try:
        await read_until(proc.stdout, "video2mp3: ready.", [], 120)
        children = children_of(proc.pid)
        assert len(children) == 5, children  # four services and nx-27017
        proc.kill()
        await proc.wait()
        deadline = time.monotonic() + 45
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not [pid for pid in children if alive(pid)]
        assert all(port_is_free(port) for port in ports.values())
    finally:
        # Only what still runs: a pid that ended may already belong to another process.
        for pid in children:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await delete_topology(amqp_url, prefix)


async def start_up(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await launch_up(env)
    assert proc.stdout is not None
    seen: list[str] = []
    await read_until(proc.stdout, "video2mp3: ready.", seen, 180)
    return proc, seen


async def stop_up(proc: asyncio.subprocess.Process) -> str:
    if proc.returncode is not None:
        return ""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return out.decode(errors="replace")


async def drop_derived_topology(amqp_url: str, var_dir: Path) -> None:
    if (var_dir / PREFIX_FILE).exists():
        await delete_topology(amqp_url, (var_dir / PREFIX_FILE).read_text().strip())


async def convert_as_new_user(
    api: str, source: Path, jobs: int
) -> tuple[str, list[dict[str, Any]]]:
    """A new user of the stack at `api` uploads `jobs` copies of `source`; their final states."""
    async with httpx.AsyncClient(base_url=api, timeout=60) as client:
        email_address = f"user-{uuid.uuid4().hex[:8]}@example.com"
        creds = {"email": email_address, "password": "correct horse battery"}
        assert (await client.post("/v1/auth/register", json=creds)).status_code == 201
        login = await client.post(
            "/v1/auth/login", data={"username": email_address, "password": creds["password"]}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        ids = []
        for i in range(jobs):
            with source.open("rb") as f:
                files = {"file": (f"clip-{i}.mp4", f, "video/mp4")}
                created = await client.post("/v1/jobs", headers=headers, files=files)
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        deadline = time.monotonic() + 240
        while True:
            jobs_now = [(await client.get(f"/v1/jobs/{i}", headers=headers)).json() for i in ids]
            if all(j["status"] not in ("queued", "processing") for j in jobs_now):
                return email_address, jobs_now
            assert time.monotonic() < deadline, [j["status"] for j in jobs_now]
            await asyncio.sleep(1)


def mail_recipients(var_dir: Path) -> list[str]:
    return sorted(
        str(email.message_from_bytes(path.read_bytes())["To"])
        for path in (var_dir / "mail").glob("*.eml")
    )


async def test_two_ups_on_one_broker_keep_to_their_own_jobs_and_users(
    amqp_url: str, media: MediaFactory, tmp_path: Path
) -> None:
    # Both on the default names, each stack consumed the other's jobs: some were lost, some
    # failed as `internal_error`, and each notification service mailed the other's users.
    source = media.h264_aac(2, size="64x48")
    var_dirs = [tmp_path / "one", tmp_path / "two"]
    procs: list[asyncio.subprocess.Process] = []
    try:
        apis = []
        for var_dir in var_dirs:  # one after the other: both would take nx-27017's free port
            ports = {name: free_port() for name in SERVICES}
            proc, seen = await start_up(up_env(amqp_url, var_dir, None, ports))
            procs.append(proc)
            assert "warning" not in "".join(seen)
            apis.append(f"http://127.0.0.1:{ports['GATEWAY']}")
        prefixes = [(v / PREFIX_FILE).read_text().strip() for v in var_dirs]
        assert prefixes[0] != prefixes[1]
        assert all(p.startswith("video2mp3-") for p in prefixes)
        results = await asyncio.gather(*(convert_as_new_user(api, source, 10) for api in apis))
        for (owner, jobs), var_dir in zip(results, var_dirs, strict=True):
            assert [j["status"] for j in jobs] == ["completed"] * 10, jobs
            deadline = time.monotonic() + 60
            while len(mail_recipients(var_dir)) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # a stray eleventh mail would land meanwhile
            assert mail_recipients(var_dir) == [owner] * 10
        for proc in procs:
            assert_quiet(await stop_up(proc))
        # A second start keeps the namespace: its queues, and the jobs waiting in them.
        ports = {name: free_port() for name in SERVICES}
        proc, _ = await start_up(up_env(amqp_url, var_dirs[0], None, ports))
        procs.append(proc)
        assert (var_dirs[0] / PREFIX_FILE).read_text().strip() == prefixes[0]
    finally:
        for proc in procs:
            await stop_up(proc)
        for var_dir in var_dirs:
            await drop_derived_topology(amqp_url, var_dir)


async def test_up_warns_when_others_consume_its_queues(amqp_url: str, tmp_path: Path) -> None:
    # Another stack on the same names: an `up` that says nothing loses jobs to it silently.
    prefix = f"test-up-{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix)
    connection = await aio_pika.connect(amqp_url, timeout=10)
    ports = {name: free_port() for name in SERVICES}
    proc = None
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        queue = await channel.get_queue(topology.jobs_queue)

        async def hold(message: AbstractIncomingMessage) -> None:
            await message.nack()

        await queue.consume(hold)
        proc, seen = await start_up(up_env(amqp_url, tmp_path / "var", prefix, ports))
        warnings = [line for line in seen if "warning:" in line]
        assert len(warnings) == 1, seen
        assert f"{topology.jobs_queue} already has 1 consumer" in warnings[0]
    finally:
        await connection.close()
        if proc is not None:
            await stop_up(proc)
        await delete_topology(amqp_url, prefix)


@pytest.mark.parametrize("prefix", [None, "video2mp3", "video2mp3-0123abcd"])
def test_no_test_stack_runs_on_the_names_of_an_up(
    prefix: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every stack of the tests and benchmarks comes through running_stack.
    monkeypatch.delenv("AMQP_PREFIX", raising=False)
    env = {} if prefix is None else {"AMQP_PREFIX": prefix}
    with pytest.raises(ValueError, match="AMQP_PREFIX of its own"), running_stack(env, tmp_path):
        pass
