"""Sign-ups are throttled per address, and hashing their passwords never starves logins."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

import httpx

from services.auth.passwords import HashingLanes
from tests.auth.conftest import PASSWORD, login, make_settings, new_email, register, running_auth

SIGNUPS = 60


def new_address() -> str:
    value = uuid.uuid4().int
    return f"10.{value % 250}.{value // 250 % 250}.{value // 62500 % 250 + 1}"


async def sign_up(
    client: httpx.AsyncClient, address: str, email: str | None = None, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/v1/auth/register",
        json={"email": email or new_email(), "password": password},
        headers={"X-Forwarded-For": address},
    )


async def test_sign_ups_are_limited_per_address(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "var", signup_max_per_address=3)
    async with running_auth(settings) as client:
        address = new_address()
        assert (await sign_up(client, address)).status_code == 201
        # Failed sign-ups count too: each may have cost a hash.
        assert (await sign_up(client, address, password="short")).status_code == 422
        assert (await sign_up(client, address)).status_code == 201
        refused = await sign_up(client, address)
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_attempts"
        assert 1 <= int(refused.headers["retry-after"]) <= settings.login_window_seconds
        # Another address is not held to this one's count.
        assert (await sign_up(client, new_address())).status_code == 201


async def timed_login(client: httpx.AsyncClient, email: str) -> float:
    started = time.perf_counter()
    response = await login(client, email)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def test_a_login_keeps_its_pace_during_a_burst_of_sign_ups(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "var")
    async with running_auth(settings) as client:
        email = new_email()
        await register(client, email)
        await timed_login(client, email)  # warm: first connections, caches
        before = [await timed_login(client, email) for _ in range(4)]

        # From as many addresses as sign-ups, so that only the hashing bound stands in the way.
        burst = [asyncio.create_task(sign_up(client, new_address())) for _ in range(SIGNUPS)]
        await asyncio.sleep(0.05)
        during = [await timed_login(client, email) for _ in range(7)]
        answers = await asyncio.gather(*burst)
        # Idle measured on both sides of the burst: the machine's load may change meanwhile.
        idle = statistics.median(before + [await timed_login(client, email) for _ in range(4)])

        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {201, 429}, statuses
        assert statuses.count(429) > 0  # refused rather than queued for long
        assert all(r.json()["code"] == "too_many_attempts" for r in answers if r.status_code == 429)
        assert statistics.median(during) <= 2 * idle, (idle, during)


async def test_new_passwords_wait_in_a_short_line_then_are_refused() -> None:
    lanes = HashingLanes(cpus=2)

    async def sign_up(i: int) -> str:
        async with lanes.new_password.slot():
            return await lanes.hash_new(f"password number {i}")

    results = await asyncio.gather(*(sign_up(i) for i in range(10)), return_exceptions=True)
    lanes.close()
    hashed = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, Exception)]
    # One slot on two cores, four in line: five hashed, five told to come back.
    assert len(hashed) == 5
    assert len(refused) == 5
    assert all(getattr(r, "retry_after", 0) >= 1 for r in refused)
