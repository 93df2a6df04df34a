"""Cancelling a running conversion: FFmpeg stops, nothing is left, the job reads cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from shared.events import JobCancelled, JobRef
from shared.jobs import JOBS_COLLECTION
from shared.mongo import mongo_client
from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_live import events_until_final, receive, ws_url
from tests.e2e.test_pipeline import auth, stored_blobs, upload, wait_final
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


def converter_temp_entries(stack: Stack) -> list[Path]:
    """Job temp dirs inside every converter's own (per-process) temp root."""
    root = Path(stack.env["VAR_DIR"]) / "tmp" / "converter"
    return [job for proc in root.glob("pid-*") for job in proc.iterdir()]


async def test_cancel_mid_conversion_leaves_nothing(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    source = media.long_tone()
    before = await stored_blobs(stack)
    async with connect(ws_url(stack.gateway_url, user["access_token"])) as ws:
        await receive(ws)
        response = await upload(client, user, source)
        job_id = response.json()["id"]
        while True:  # wait until FFmpeg is really running
            event = await receive(ws)
            if event.get("job_id") == job_id and event["type"] == "job.progress":
                break
            assert event["type"] not in ("job.completed", "job.failed"), event
        assert converter_temp_entries(stack), "the conversion should be using a temp dir"
        deleted = await client.delete(f"/v1/jobs/{job_id}", headers=auth(user))
        assert deleted.status_code == 204
        events = await events_until_final(ws, job_id)
    assert events[-1]["type"] == "job.cancelled"
    job = await wait_final(client, user, job_id)
    assert job["status"] == "cancelled"
    assert job["output"] is None
    download = await client.get(f"/v1/jobs/{job_id}/download", headers=auth(user))
    assert download.status_code == 409
    for _ in range(50):  # the converter removes its temp dir as the task unwinds
        if not converter_temp_entries(stack):
            break
        await asyncio.sleep(0.1)
    assert converter_temp_entries(stack) == []
    assert await stored_blobs(stack) == before
    # A second DELETE removes the cancelled job for good.
    assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 204
    assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 404


async def test_cancelling_a_queued_job_is_announced(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    # One conversion at a time: the second job waits in the queue behind the first. No
    # converter has it, so the gateway itself must say `job.cancelled` to the user's pages.
    async with (
        private_stack(smtp.url, CONVERTER_CONCURRENCY="1") as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        user = await register_and_login(client)
        async with connect(ws_url(stack.gateway_url, user["access_token"])) as ws:
            await receive(ws)
            second = media.h264_aac(2)  # made first: the wait below is the long job's run
            running = (await upload(client, user, media.long_tone())).json()["id"]
            while (await receive(ws)).get("type") != "job.progress":
                pass
            queued = (await upload(client, user, second)).json()["id"]
            job = (await client.get(f"/v1/jobs/{queued}", headers=auth(user))).json()
            assert job["status"] == "queued"
            deleted = await client.delete(f"/v1/jobs/{queued}", headers=auth(user))
            assert deleted.status_code == 204
            events = await asyncio.wait_for(events_until_final(ws, queued), 10)
            assert [e["type"] for e in events] == ["job.cancelled"]
            await client.delete(f"/v1/jobs/{running}", headers=auth(user))
            await asyncio.wait_for(events_until_final(ws, running), 30)
        job = (await client.get(f"/v1/jobs/{queued}", headers=auth(user))).json()
        assert job["status"] == "cancelled"
        assert job["output"] is None


async def test_a_job_whose_converter_died_is_still_announced_cancelled(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    # The gateway records the cancel's event; the converter running the job sends it once
    # FFmpeg has stopped. Killed outright, it never does: the job's redelivery to the next
    # converter must.
    async with (
        private_stack(smtp.url) as stack,
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
    ):
        user = await register_and_login(client)
        async with connect(ws_url(stack.gateway_url, user["access_token"])) as ws:
            await receive(ws)
            job_id = (await upload(client, user, media.long_tone())).json()["id"]
            while (await receive(ws)).get("type") != "job.progress":
                pass
            stack.stop("converter", sig_kill=True)
            deleted = await client.delete(f"/v1/jobs/{job_id}", headers=auth(user))
            assert deleted.status_code == 204
            await asyncio.to_thread(stack.start, "converter")
            events = await asyncio.wait_for(events_until_final(ws, job_id), 30)
        assert events[-1]["type"] == "job.cancelled"
        assert [e for e in events if e["type"] == "job.cancelled"] == events[-1:]
        job = (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).json()
        assert job["status"] == "cancelled"


async def test_deleting_a_job_sends_its_unsent_final_event_first(
    stack: Stack, client: httpx.AsyncClient, user: dict[str, str], media: MediaFactory
) -> None:
    # A job whose final event is still in its outbox (the broker was out when it ended, as a
    # cancel recorded during an outage leaves it): a DELETE removed the job and the news.
    job_id = (await upload(client, user, media.h264_aac(2))).json()["id"]
    job = await wait_final(client, user, job_id)
    assert job["status"] == "completed"
    mongo = mongo_client(stack.env["MONGO_URL"])
    try:
        documents = mongo[stack.env["MONGO_DB"]][JOBS_COLLECTION]
        found = await documents.find_one({"_id": job_id})
        assert found is not None
        ref = JobRef(job_id=job_id, user_id=found["user_id"])
        unsent = JobCancelled(correlation_id=job_id, payload=ref)
        await documents.update_one(
            {"_id": job_id}, {"$set": {"outbox": unsent.model_dump(mode="json")}}
        )
    finally:
        await mongo.close()
    async with connect(ws_url(stack.gateway_url, user["access_token"])) as ws:
        await receive(ws)
        assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 204
        event = await asyncio.wait_for(receive(ws), 10)
    assert event == {
        "type": "job.cancelled",
        "occurred_at": unsent.occurred_at.isoformat(),
        "job_id": job_id,
    }
    assert (await client.get(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 404
