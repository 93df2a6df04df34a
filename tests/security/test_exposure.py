"""What the public may reach and hold: request heads, connections, uploads in flight and their
deadline, /metrics and /readyz behind the proxy, and what the shipped proxy logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.support.net import free_port, wait_for_port
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack

REPO = Path(__file__).resolve().parents[2]
BOUNDARY = "b0undaryXyz"


async def status_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    body = await reader.readexactly(length) if length else b""
    return status, json.loads(body) if body.startswith(b"{") else {}


async def test_a_huge_request_head_is_cut_off_with_431(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.ports["gateway"])
    sent = 0
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: ")
        answer = asyncio.create_task(status_of(reader))
        filler = b"a" * 65536
        while not answer.done() and sent < 200 * 1024 * 1024:
            writer.write(filler)
            sent += len(filler)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0)
            if sent % (1024 * 1024) == 0:
                await asyncio.wait({answer}, timeout=0.05)
        status, body = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    assert status == 431
    assert body["code"] == "headers_too_large"
    assert sent < 16 * 1024 * 1024, sent  # cut off early, not read to the end
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        assert (await client.get("/healthz", headers={"x-fine": "b" * 8000})).status_code == 200


async def test_metrics_and_readiness_are_refused_to_forwarded_requests(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        for path in ("/metrics", "/readyz"):
            assert (await client.get(path)).status_code == 200
            forwarded = await client.get(path, headers={"x-forwarded-for": "203.0.113.9"})
            assert forwarded.status_code == 404, path
            assert forwarded.json()["code"] == "not_found"


def form_head(size: int) -> tuple[bytes, bytes]:
    """The head of a multipart upload announcing `size` bytes, and the start of its body."""
    start = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.mp3"\r\n'
            "Content-Type: audio/mpeg\r\n\r\n"
        ).encode()
        + b"ID3\x04\x00\x00\x00\x00\x00\x00"
        + bytes(8192)
    )
    return f"content-length: {size}\r\n".encode(), start


async def slow_upload(port: int, bearer: str) -> tuple[int, dict[str, object]]:
    """An upload that sends a little, then a byte now and then, and never finishes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length, start = form_head(512 * 1024)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nhost: test\r\nauthorization: " + bearer.encode() + b"\r\n"
        + f"content-type: multipart/form-data; boundary={BOUNDARY}\r\n".encode()
        + length + b"\r\n" + start
    )  # fmt: skip
    answer = asyncio.create_task(status_of(reader))
    try:
        while not answer.done():
            with contextlib.suppress(ConnectionError):
                writer.write(b"\x00" * 16)
                await writer.drain()
            await asyncio.wait({answer}, timeout=0.3)
        return answer.result()
    finally:
        writer.close()


async def test_uploads_in_flight_are_capped_and_each_has_a_deadline(
    private_stack: StackFactory, tmp_path: Path
) -> None:
    clip = tmp_path / "small.mp3"
    clip.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(4096))
    async with (
        SmtpCatcher() as smtp,
        private_stack(
            smtp.url, USER_MAX_UPLOADS="2", UPLOAD_DEADLINE_SECONDS="6", NETWORK_TIMEOUT="15"
        ) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        user = await register_and_login(client)
        started = time.monotonic()
        slow = [
            asyncio.create_task(slow_upload(stack.ports["gateway"], user["authorization"]))
            for _ in range(2)
        ]
        await asyncio.sleep(2)
        with clip.open("rb") as f:
            third = await client.post(
                "/v1/jobs",
                headers={"authorization": user["authorization"]},
                files={"file": ("small.mp3", f, "audio/mpeg")},
            )
        assert third.status_code == 429, third.text
        assert third.json()["code"] == "too_many_uploads"
        for status, body in await asyncio.gather(*slow):
            assert status == 408, body
            assert body["code"] == "upload_timeout"
        assert time.monotonic() - started < 30
        # Their places are given back: the next upload goes through.
        with clip.open("rb") as f:
            again = await client.post(
                "/v1/jobs",
                headers={"authorization": user["authorization"]},
                files={"file": ("small.mp3", f, "audio/mpeg")},
            )
        assert again.status_code == 202, again.text


async def test_connections_per_process_are_limited(
    private_stack: StackFactory,
) -> None:
    async with SmtpCatcher() as smtp, private_stack(smtp.url, MAX_CONNECTIONS="6") as stack:
        port = stack.ports["gateway"]
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(6)]
        try:
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 503
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200
        finally:
            for _, writer in held:
                writer.close()


def test_the_ingress_keeps_no_access_log() -> None:
    ingress = yaml.safe_load((REPO / "deploy/k8s/base/ingress.yaml").read_text())
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/enable-access-log"] == "false"


def proxy_config(gateway_port: int, port: int, root: Path) -> str:
    """The shipped nginx.conf, pointed at this test's gateway and files."""
    conf = (REPO / "deploy/proxy/nginx.conf").read_text()
    conf = conf.replace("resolver 127.0.0.11 valid=10s ipv6=off;", "")
    conf = conf.replace(
        "server gateway:8000 resolve max_fails=3 fail_timeout=10s;",
        f"server 127.0.0.1:{gateway_port};",
    )
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("listen [::]:8080;", "")
    conf = conf.replace("pid /tmp/nginx.pid;", f"pid {root}/nginx.pid;")
    conf = conf.replace("access_log /dev/stdout main;", f"access_log {root}/access.log main;")
    conf = conf.replace("error_log /dev/stderr warn;", f"error_log {root}/error.log warn;")
    assert f"127.0.0.1:{gateway_port}" in conf
    return "user root;\n" + conf


async def test_the_shipped_proxy_logs_no_tokens_and_hides_operations(
    stack: Stack, bearer: str, tmp_path: Path
) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(proxy_config(stack.ports["gateway"], port, tmp_path))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
    try:
        await asyncio.to_thread(wait_for_port, port)
        secret = uuid.uuid4().hex
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/readyz")).status_code == 404
            assert (await client.get("/healthz")).status_code == 200
            listed = await client.get(
                f"/v1/jobs?access_token={secret}", headers={"authorization": bearer}
            )
            assert listed.status_code == 200
            assert (await client.get(f"/v1/downloads/{secret}")).status_code in (404, 410)
            assert (await client.get(f"/v1/ws?ticket={secret}")).status_code >= 400
        proc.terminate()
        proc.wait(10)
        log = (tmp_path / "access.log").read_text()
        assert "/v1/downloads/-" in log, log
        assert secret not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
