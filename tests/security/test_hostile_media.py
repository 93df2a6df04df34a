"""Playlists and concat lists in disguise: refused at upload, and harmless even if they reach the
converter (no file read, no connection made)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from shared.blobstore import FileBlobStore
from shared.events import JobSubmitted, JobSubmittedPayload
from shared.jobs import Job, SourceInfo
from shared.jobstore import JobStore
from shared.mongo import mongo_client
from shared.topology import Topology
from tests.conftest import StackFactory
from tests.e2e.test_pipeline import upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP port that records every connection made to it."""
    seen: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(str(writer.get_extra_info("peername")))
        writer.close()

    port = free_port()
    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    try:
        yield port, seen
    finally:
        server.close()
        await server.wait_closed()


def hostile_files(port: int) -> dict[str, bytes]:
    return {
        "playlist.mp4": (
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n"
            f"#EXTINF:10.0,\nhttp://127.0.0.1:{port}/steal\n#EXT-X-ENDLIST\n"
        ).encode(),
        "list.avi": (
            f"ffconcat version 1.0\nfile '/etc/passwd'\nfile 'http://127.0.0.1:{port}/steal'\n"
        ).encode(),
    }


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCatcher]:
    async with SmtpCatcher() as catcher:
        yield catcher


async def test_disguised_playlists_are_refused_at_upload(
    private_stack: StackFactory, smtp: SmtpCatcher, tmp_path: Path
) -> None:
    async with listener() as (port, seen), private_stack(smtp.url) as stack:
        async with client_and_user(stack) as (client, user):
            for name, body in hostile_files(port).items():
                path = tmp_path / name
                path.write_bytes(body)
                response = await upload(client, user, path)
                assert response.status_code == 415, name
                assert response.json()["code"] == "not_media"
        await asyncio.sleep(1)
        assert seen == []


async def test_disguised_playlists_that_reach_the_converter_are_harmless(
    private_stack: StackFactory, smtp: SmtpCatcher, amqp_url: str
) -> None:
    """Planted straight into the store and the queue, as if the gateway's sniffing had failed."""
    async with listener() as (port, seen), private_stack(smtp.url) as stack:
        async with client_and_user(stack) as (client, user):
            me = (
                await client.get("/v1/auth/me", headers={"Authorization": user["authorization"]})
            ).json()
            job_ids = [
                await plant(stack, amqp_url, me, name, body)
                for name, body in hostile_files(port).items()
            ]
            for job_id in job_ids:
                job = await wait_final(client, user, job_id)
                assert job["status"] == "failed"
                assert job["error"]["code"] == "unreadable_media"
                assert "root:" not in str(job)
        await asyncio.sleep(1)
        assert seen == [], "FFmpeg or the probe opened a network connection"
        blobs = Path(stack.env["VAR_DIR"]) / "blobs"
        assert list(blobs.rglob("*-out")) == []


async def plant(stack: Stack, amqp_url: str, me: dict[str, str], name: str, body: bytes) -> str:
    job_id = uuid.uuid4().hex
    blobs = FileBlobStore(Path(stack.env["VAR_DIR"]) / "blobs")

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    await blobs.write(f"{job_id}-src", chunks())
    client = mongo_client(stack.env["MONGO_URL"])
    try:
        await JobStore(client[stack.env["MONGO_DB"]]).insert(
            Job(
                id=job_id,
                user_id=me["id"],
                user_email=me["email"],
                filename=name,
                source_blob_id=f"{job_id}-src",
                source=SourceInfo(size=len(body)),
            )
        )
    finally:
        await client.close()
    event = JobSubmitted(
        payload=JobSubmittedPayload(
            job_id=job_id,
            user_id=me["id"],
            user_email=me["email"],
            filename=name,
            source_blob_id=f"{job_id}-src",
            size=len(body),
        )
    )
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(Topology(stack.env["AMQP_PREFIX"]).exchange)
        await exchange.publish(
            aio_pika.Message(event.model_dump_json().encode()), routing_key=str(event.type)
        )
    return job_id
