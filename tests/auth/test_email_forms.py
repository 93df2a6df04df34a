"""One address, many spellings: register, login and the throttle agree on which account it is,
and concurrent logins never wait on each other for a database connection."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from tests.auth.conftest import PASSWORD, login, register, running_auth
from tests.auth.test_throttle import MAX_PER_ACCOUNT, throttled_settings


async def test_the_address_registered_is_the_address_that_logs_in(
    client: httpx.AsyncClient,
) -> None:
    tag = uuid.uuid4().hex[:8]
    for typed in (
        f"jose\u0301{tag}@example.com",  # decomposed é, as some keyboards send it
        f"bob{tag}@xn--bcher-kva.ch",  # an IDNA domain, stored in its Unicode form
        f"Carol{tag}@Example.COM",
    ):
        await register(client, typed)
        assert (await login(client, typed)).status_code == 200, ascii(typed)
    # The other spelling of the same address is the same account.
    assert (await login(client, f"jos\u00e9{tag}@example.com")).status_code == 200
    assert (await login(client, f"bob{tag}@b\u00fccher.ch")).status_code == 200


async def test_a_locked_account_cannot_be_reached_by_another_spelling(
    database_url: str, tmp_path: Path
) -> None:
    # MariaDB's utf8mb4_unicode_ci takes "á" for "a": the lookup found Alice's account under
    # "álice", whose throttle counter (per address as typed) was fresh.
    async with running_auth(throttled_settings(database_url, tmp_path / "var")) as client:
        alice = f"alice{uuid.uuid4().hex[:8]}@example.com"
        await register(client, alice)
        for _ in range(MAX_PER_ACCOUNT):
            assert (await login(client, alice, "wrong password 1")).status_code == 401
        assert (await login(client, alice)).status_code == 429
        variant = "\u00e1" + alice[1:]
        assert (await login(client, variant)).status_code == 401


async def test_concurrent_logins_do_not_exhaust_the_connection_pool(
    client: httpx.AsyncClient,
) -> None:
    # Each login held its request's connection through the password hash and then asked for a
    # second one: 15 at once (the pool's 5 + 10) waited on each other for 30 s, then got 500s.
    emails = [f"pool{uuid.uuid4().hex[:10]}@example.com" for _ in range(20)]
    for email in emails:
        await register(client, email)
    started = time.monotonic()
    answers = await asyncio.gather(*(login(client, email, PASSWORD) for email in emails))
    assert [a.status_code for a in answers] == [200] * len(emails)
    assert time.monotonic() - started < 20
