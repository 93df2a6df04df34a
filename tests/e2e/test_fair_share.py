"""Fair share with real jobs: one account's backlog of 40 does not hold up another's one job."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.jobs import JOBS_COLLECTION
from shared.mongo import mongo_client
from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import auth, upload, wait_final
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack

BACKLOG = 40


async def job_docs(stack: Stack) -> list[dict[str, Any]]:
    client = mongo_client(stack.env["MONGO_URL"])
    try:
        jobs = client[stack.env["MONGO_DB"]][JOBS_COLLECTION]
        fields = {"user_id": 1, "created_at": 1, "started_at": 1}
        docs = await jobs.find({}, fields).to_list()
    finally:
        await client.close()
    # nx-27017 hands back a datetime set by an update as text.
    for doc in docs:
        for key in ("created_at", "started_at"):
            if isinstance(doc.get(key), str):
                doc[key] = datetime.fromisoformat(doc[key])
            if doc.get(key) is not None and doc[key].tzinfo is None:
                doc[key] = doc[key].replace(tzinfo=UTC)
    return docs


async def wait_running(
    client: httpx.AsyncClient, user: dict[str, str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = (await client.get("/v1/jobs?limit=100", headers=auth(user))).json()
        if any(j["status"] != "queued" for j in page["items"]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no job started")


async def test_one_job_starts_within_a_job_per_slot_behind_a_backlog_of_40(
    private_stack: StackFactory, media: MediaFactory
) -> None:
    clip = media.tone(60, 0.5, "fair-share.flac")
    # Two converters of one slot each: the slots are spread over processes, as in production.
    slots = 2
    async with (
        SmtpCatcher() as smtp,
        private_stack(
            smtp.url, CONVERTER_CONCURRENCY="1", USER_MAX_ACTIVE_JOBS="0", NETWORK_TIMEOUT="15"
        ) as stack,
    ):
        stack.stop("converter")
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
            a = await register_and_login(client)
            b = await register_and_login(client)
            for i in range(BACKLOG):
                assert (await upload(client, a, clip, f"a{i}.flac")).status_code == 202
            for name in ("converter", "converter2"):
                stack.launch(name, "converter")
            await wait_running(client, a)
            response = await upload(client, b, clip, "b.flac")
            assert response.status_code == 202, response.text
            b_job = await wait_final(client, b, response.json()["id"], timeout=120)
            assert b_job["status"] == "completed", b_job
            docs = await job_docs(stack)
        b_doc = next(d for d in docs if d["_id"] == b_job["id"])
        a_docs = [d for d in docs if d["user_id"] != b_doc["user_id"]]
        queued_when_b_came = [
            d for d in a_docs if not d.get("started_at") or d["started_at"] > b_doc["created_at"]
        ]
        overtook = [
            d
            for d in queued_when_b_came
            if d.get("started_at") and d["started_at"] < b_doc["started_at"]
        ]
        # A's backlog was there when B's job came, and at most one A job per slot started
        # before it.
        assert len(queued_when_b_came) >= BACKLOG - 2 * slots, len(queued_when_b_came)
        assert len(overtook) <= slots, len(overtook)
