"""Per-account quotas against the real services: parallel uploads through two gateways cannot
pass the active-jobs limit, and the storage and daily limits answer with their codes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import StackFactory
from tests.e2e.conftest import register_and_login
from tests.e2e.test_pipeline import auth, upload
from tests.support.media import MediaFactory
from tests.support.smtp import SmtpCatcher


async def test_parallel_uploads_through_two_gateways_stop_at_the_active_limit(
    private_stack: StackFactory, media: MediaFactory
) -> None:
    clip = media.tone(2, 0.5, "quota-active.flac")
    async with (
        SmtpCatcher() as smtp,
        private_stack(
            smtp.url, USER_MAX_ACTIVE_JOBS="3", USER_MAX_UPLOADS="0", NETWORK_TIMEOUT="15"
        ) as stack,
    ):
        stack.stop("converter")  # the admitted jobs stay queued: the limit is all that counts
        await asyncio.to_thread(stack.start, "gateway2", "gateway")
        async with (
            httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as one,
            httpx.AsyncClient(base_url=stack.url("gateway2"), timeout=60) as two,
        ):
            user = await register_and_login(one)
            answers = await asyncio.gather(
                *(upload(one if i % 2 else two, user, clip) for i in range(12))
            )
            codes = Counter((r.status_code, r.json().get("code", "")) for r in answers)
            assert codes == {(202, ""): 3, (429, "too_many_active_jobs"): 9}, codes
            refused = next(r for r in answers if r.status_code == 429)
            assert int(refused.headers["retry-after"]) > 0
            usage = (await two.get("/v1/usage", headers=auth(user))).json()
            assert (usage["active_jobs"], usage["active_jobs_limit"]) == (3, 3), usage
            # Once one is cancelled, there is room for exactly one more.
            job_id = next(r.json()["id"] for r in answers if r.status_code == 202)
            assert (await one.delete(f"/v1/jobs/{job_id}", headers=auth(user))).status_code == 204
            again = await asyncio.gather(*(upload(two, user, clip) for _ in range(3)))
            assert sorted(r.status_code for r in again) == [202, 429, 429]


async def test_storage_and_daily_limits(
    private_stack: StackFactory, media: MediaFactory, tmp_path: Path
) -> None:
    clip = media.tone(2, 0.5, "quota-storage.flac")
    size = clip.stat().st_size
    async with (
        SmtpCatcher() as smtp,
        private_stack(
            smtp.url,
            USER_STORAGE_BYTES=str(size * 3 // 2),
            USER_JOBS_PER_DAY="3",
            NETWORK_TIMEOUT="15",
        ) as stack,
    ):
        stack.stop("converter")  # sources stay stored while their jobs wait
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
            user = await register_and_login(client)
            first = await upload(client, user, clip)
            assert first.status_code == 202, first.text
            usage = (await client.get("/v1/usage", headers=auth(user))).json()
            assert usage == {
                "storage_bytes": size,
                "storage_limit": size * 3 // 2,
                "active_jobs": 1,
                "active_jobs_limit": 20,
                "jobs_today": 1,
                "jobs_per_day_limit": 3,
            }
            full = await upload(client, user, clip)
            assert full.status_code == 403, full.text
            assert full.json()["code"] == "storage_quota_exceeded"
            # A refused upload does not count against the day.
            usage = (await client.get("/v1/usage", headers=auth(user))).json()
            assert usage["jobs_today"] == 1, usage
            # Deleting frees the space, but not the day's count.
            for _ in range(2):
                job = (await client.get("/v1/jobs", headers=auth(user))).json()["items"][0]
                await client.delete(f"/v1/jobs/{job['id']}", headers=auth(user))
                response = await upload(client, user, clip)
                assert response.status_code == 202, response.text
            last = (await client.get("/v1/jobs", headers=auth(user))).json()["items"][0]
            await client.delete(f"/v1/jobs/{last['id']}", headers=auth(user))
            over = await upload(client, user, clip)
            assert over.status_code == 429, over.text
            assert over.json()["code"] == "daily_limit"
            assert 0 < int(over.headers["retry-after"]) <= 86400
            usage = (await client.get("/v1/usage", headers=auth(user))).json()
            assert (usage["jobs_today"], usage["storage_bytes"]) == (3, 0), usage
            # Another account has its own allowance.
            other = await register_and_login(client)
            assert (await upload(client, other, clip)).status_code == 202


async def test_an_admins_limit_for_one_account_wins_over_the_setting(
    private_stack: StackFactory, media: MediaFactory
) -> None:
    clip = media.tone(2, 0.5, "quota-override.flac")
    async with (
        SmtpCatcher() as smtp,
        private_stack(smtp.url, USER_MAX_ACTIVE_JOBS="5", NETWORK_TIMEOUT="15") as stack,
    ):
        stack.stop("converter")
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
            admin = await register_and_login(client)  # the first account is an admin
            user = await register_and_login(client)
            user_id = (await client.get("/v1/auth/me", headers=auth(user))).json()["id"]

            async def set_limit(value: int | None) -> None:
                answer = await client.patch(
                    f"/v1/admin/users/{user_id}",
                    headers=auth(admin),
                    json={"limits": {"max_active_jobs": value}},
                )
                assert answer.status_code == 200, answer.text

            await set_limit(1)
            assert (await upload(client, user, clip)).status_code == 202
            refused = await upload(client, user, clip)
            assert (refused.status_code, refused.json()["code"]) == (429, "too_many_active_jobs")
            usage = (await client.get("/v1/usage", headers=auth(user))).json()
            assert usage["active_jobs_limit"] == 1, usage
            # Others keep the installation's limit; null gives the account the default back.
            assert (await upload(client, admin, clip)).status_code == 202
            await set_limit(None)
            assert (await upload(client, user, clip)).status_code == 202
            usage = (await client.get("/v1/usage", headers=auth(user))).json()
            assert (usage["active_jobs"], usage["active_jobs_limit"]) == (2, 5), usage
