"""Login brute-force protection, through the app, on MariaDB and SQLite."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.auth import passwords, throttle
from services.auth.migrate import upgrade
from services.auth.models import LoginAttempts, User
from services.auth.throttle import (
    LoginThrottle,
    Scope,
    ThrottlePolicy,
    account_subject,
    address_subject,
)
from shared.settings import Settings
from tests.auth.conftest import PASSWORD, login, new_email, register, running_auth

MAX_PER_ACCOUNT = 3
MAX_PER_ADDRESS = 5
WINDOW = 600


def throttled_settings(database_url: str, var_dir: Path) -> Settings:
    return Settings(
        login_max_failures=MAX_PER_ACCOUNT,
        login_max_failures_per_address=MAX_PER_ADDRESS,
        login_window_seconds=WINDOW,
        trusted_proxies="127.0.0.1,::1",
        database_url=database_url,
        var_dir=var_dir,
        jwt_private_key=None,
        jwt_private_key_file=None,
    )


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_auth(throttled_settings(database_url, tmp_path / "var")) as client:
        yield client


def new_address() -> str:
    """A client address no other test uses (the database lives for the whole session)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def login_from(
    client: httpx.AsyncClient,
    address: str,
    email: str,
    password: str = PASSWORD,
    device_token: str | None = None,
) -> httpx.Response:
    form = {"username": email, "password": password}
    if device_token is not None:
        form["device_token"] = device_token
    return await client.post("/v1/auth/login", data=form, headers={"X-Forwarded-For": address})


def assert_throttled(response: httpx.Response, window: int = WINDOW) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= window
    # The body says when too, for clients that do not read headers.
    assert response.json() == {
        "detail": f"too many failed login attempts; try again in {retry_after} seconds",
        "code": "too_many_attempts",
        "retry_after": retry_after,
    }


def without_seconds(body: dict[str, object]) -> dict[str, object]:
    return {
        key: re.sub(r"\d+", "N", value) if isinstance(value, str) else value
        for key, value in body.items()
        if key != "retry_after"
    }


def test_the_policy_is_the_settings() -> None:
    assert ThrottlePolicy.from_settings(Settings()) == ThrottlePolicy(5, 20, 900)


async def test_failures_per_account_end_in_429(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    for _ in range(MAX_PER_ACCOUNT):
        # A new address each time: this is the account's limit, not an address's.
        assert (await login_from(client, new_address(), email, "wrong password")).status_code == 401
    assert_throttled(await login_from(client, new_address(), email, "wrong password"))
    # While throttled even the right password is refused: it is never checked.
    assert_throttled(await login_from(client, new_address(), email))


async def test_unknown_account_is_throttled_the_same_way(client: httpx.AsyncClient) -> None:
    known, unknown = new_email(), new_email()
    await register(client, known)
    answers: dict[str, list[tuple[int, object]]] = {}
    for email in (known, unknown):
        responses = [
            await login_from(client, new_address(), email, "wrong password")
            for _ in range(MAX_PER_ACCOUNT + 2)
        ]
        # Alike but for the seconds left, which may differ by one between the two runs.
        answers[email] = [(r.status_code, without_seconds(r.json())) for r in responses]
        assert all("retry-after" in r.headers for r in responses[MAX_PER_ACCOUNT:])
    assert answers[known] == answers[unknown]
    assert [status for status, _ in answers[known]] == [401] * MAX_PER_ACCOUNT + [429, 429]


async def test_success_resets_the_account_count(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    for _ in range(2):
        for _ in range(MAX_PER_ACCOUNT - 1):
            assert (await login_from(client, new_address(), email, "wrong")).status_code == 401
        assert (await login_from(client, new_address(), email)).status_code == 200


async def test_a_known_device_logs_in_while_strangers_have_locked_the_account(
    client: httpx.AsyncClient,
) -> None:
    # Failing on purpose from a few addresses locked the owner out, window after window.
    email = new_email()
    await register(client, email)
    device = (await login_from(client, new_address(), email)).json()["device_token"]
    for _ in range(MAX_PER_ACCOUNT):
        assert (await login_from(client, new_address(), email, "wrong")).status_code == 401
    assert_throttled(await login_from(client, new_address(), email))
    known = await login_from(client, new_address(), email, device_token=device)
    assert known.status_code == 200, known.text
    # The owner's success does not give the strangers a fresh set of guesses.
    assert_throttled(await login_from(client, new_address(), email, "wrong"))
    # Each login renews the device's token, for the same device.
    renewed = known.json()["device_token"]
    before, after = (jwt.decode(t, options={"verify_signature": False}) for t in (device, renewed))
    assert after["dev"] == before["dev"]
    assert after["exp"] >= before["exp"]
    assert (await login_from(client, new_address(), email, device_token=renewed)).is_success


async def test_a_known_device_has_its_own_limit(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    device = (await login_from(client, new_address(), email)).json()["device_token"]
    for _ in range(MAX_PER_ACCOUNT):
        wrong = await login_from(client, new_address(), email, "wrong", device_token=device)
        assert wrong.status_code == 401
    assert_throttled(await login_from(client, new_address(), email, device_token=device))
    # Its failures are its own: a login from a device without a token is still let through.
    assert (await login_from(client, new_address(), email)).status_code == 200


async def test_a_token_that_is_not_this_accounts_device_counts_as_none(
    client: httpx.AsyncClient,
) -> None:
    owner, other = new_email(), new_email()
    for email in (owner, other):
        await register(client, email)
    others_device = (await login_from(client, new_address(), other)).json()["device_token"]
    owners_login = (await login_from(client, new_address(), owner)).json()
    owners_device = owners_login["device_token"]
    for _ in range(MAX_PER_ACCOUNT):
        assert (await login_from(client, new_address(), owner, "wrong")).status_code == 401
    header, claims, _ = owners_device.split(".")
    for token in (
        others_device,
        owners_login["access_token"],  # signed by the same key, for another audience
        f"{header}.{claims}.{'A' * 86}",  # the owner's claims, a forged signature
        "not a token",
    ):
        assert_throttled(await login_from(client, new_address(), owner, device_token=token))
    assert (await login_from(client, new_address(), owner, device_token=owners_device)).is_success


async def test_device_tokens_die_with_the_password_they_were_made_under(
    client: httpx.AsyncClient, database_url: str
) -> None:
    # Whoever knew the old password could have had any number of tokens made, each with its own
    # limit: all of them would have been guesses at the new password beyond the account's.
    email = new_email()
    await register(client, email)
    device = (await login_from(client, new_address(), email)).json()["device_token"]
    new_password = "a different long passphrase"
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(User)
                .where(User.email == email)
                .values(password_hash=await passwords.hash_password(new_password))
            )
    finally:
        await engine.dispose()
    for _ in range(MAX_PER_ACCOUNT):
        assert (await login_from(client, new_address(), email, "wrong")).status_code == 401
    assert_throttled(await login_from(client, new_address(), email, device_token=device))
    assert_throttled(await login_from(client, new_address(), email, new_password, device))


async def test_a_device_token_opens_no_api(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    device = (await login_from(client, new_address(), email)).json()["device_token"]
    me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {device}"})
    assert me.status_code == 401


async def test_email_case_does_not_make_a_new_account_count(client: httpx.AsyncClient) -> None:
    email = new_email()
    for variant in (email, email.upper(), f"  {email.title()} ")[:MAX_PER_ACCOUNT]:
        assert (await login_from(client, new_address(), variant, "wrong")).status_code == 401
    assert_throttled(await login_from(client, new_address(), email.upper(), "wrong"))


async def test_failures_per_address_end_in_429(client: httpx.AsyncClient) -> None:
    address = new_address()
    victim = new_email()
    await register(client, victim)
    # Password spraying: one guess per account, all from one address.
    for _ in range(MAX_PER_ADDRESS):
        assert (await login_from(client, address, new_email(), "wrong")).status_code == 401
    assert_throttled(await login_from(client, address, new_email(), "wrong"))
    assert_throttled(await login_from(client, address, victim))
    # Other addresses, and the victim's account, are not affected.
    assert (await login_from(client, new_address(), victim)).status_code == 200


async def test_successes_do_not_count_against_an_address(client: httpx.AsyncClient) -> None:
    address = new_address()  # think: an office behind one NAT
    email = new_email()
    await register(client, email)
    for _ in range(MAX_PER_ADDRESS + 1):
        assert (await login_from(client, address, email)).status_code == 200
    assert (await login_from(client, address, new_email(), "wrong")).status_code == 401


async def test_an_ipv6_client_counts_by_its_64(client: httpx.AsyncClient) -> None:
    prefix = f"2001:db8:{random.randrange(65536):x}:{random.randrange(65536):x}"
    for host in range(1, MAX_PER_ADDRESS + 1):
        response = await login_from(client, f"{prefix}::{host}", new_email(), "wrong")
        assert response.status_code == 401
    assert_throttled(await login_from(client, f"{prefix}::ffff", new_email(), "wrong"))


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    database_url: str, tmp_path: Path
) -> None:
    peer = new_address()
    settings = throttled_settings(database_url, tmp_path / "var")
    async with running_auth(settings, peer=(peer, 40000)) as client:
        # A client that talks to auth directly cannot dodge its limit by inventing addresses.
        for _ in range(MAX_PER_ADDRESS):
            response = await login_from(client, new_address(), new_email(), "wrong")
            assert response.status_code == 401
        assert_throttled(await login_from(client, new_address(), new_email(), "wrong"))


async def test_forwarded_for_left_of_the_trusted_hop_is_ignored(client: httpx.AsyncClient) -> None:
    """The gateway appends the address it saw; whatever the client wrote before it is noise."""
    address = new_address()
    for _ in range(MAX_PER_ADDRESS):
        spoofed = f"{new_address()}, {address}"
        assert (await login_from(client, spoofed, new_email(), "wrong")).status_code == 401
    assert_throttled(await login_from(client, f"{new_address()}, {address}", new_email(), "x"))


async def test_a_new_window_starts_after_the_old_one_ends(
    client: httpx.AsyncClient, database_url: str
) -> None:
    email = new_email()
    await register(client, email)
    for _ in range(MAX_PER_ACCOUNT):
        await login_from(client, new_address(), email, "wrong")
    assert_throttled(await login_from(client, new_address(), email, "wrong"))

    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(LoginAttempts)
                .where(
                    LoginAttempts.scope == Scope.ACCOUNT,
                    LoginAttempts.subject == account_subject(email),
                )
                .values(window_ends_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()
    assert (await login_from(client, new_address(), email, "wrong")).status_code == 401
    assert (await login_from(client, new_address(), email)).status_code == 200


async def test_parallel_guesses_cannot_slip_past_the_limit(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    responses = await asyncio.gather(
        *(login_from(client, new_address(), email, f"guess {i}") for i in range(10))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * MAX_PER_ACCOUNT + [429] * (10 - MAX_PER_ACCOUNT)


async def test_limits_are_shared_by_every_auth_instance(database_url: str, tmp_path: Path) -> None:
    email = new_email()
    settings = [throttled_settings(database_url, tmp_path / f"var{i}") for i in range(2)]
    async with running_auth(settings[0]) as first, running_auth(settings[1]) as second:
        for i in range(MAX_PER_ACCOUNT):
            instance = (first, second)[i % 2]
            assert (await login_from(instance, new_address(), email, "x")).status_code == 401
        assert_throttled(await login_from(first, new_address(), email, "x"))
        assert_throttled(await login_from(second, new_address(), email, "x"))


async def test_a_proxy_that_names_no_client_is_not_counted_as_one(
    client: httpx.AsyncClient,
) -> None:
    """Without X-Forwarded-For from a trusted proxy the client is unknown: only accounts count.

    Counting the proxy's own address would let a few failures lock everyone behind it out.
    """
    for _ in range(MAX_PER_ADDRESS + 1):
        assert (await login(client, new_email(), "wrong")).status_code == 401


async def test_expired_counts_are_purged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade(database_url)
    monkeypatch.setattr(throttle, "PURGE_EVERY", 1)
    now = datetime.now(UTC)
    engine = create_async_engine(database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        old = LoginThrottle(
            sessions, ThrottlePolicy(5, 20, 900), clock=lambda: now - timedelta(hours=1)
        )
        stale = new_email()
        await old.count(stale, new_address())
        await LoginThrottle(sessions, ThrottlePolicy(5, 20, 900), clock=lambda: now).count(
            new_email(), None
        )
        async with sessions() as session:
            left = await session.scalar(
                select(func.count())
                .select_from(LoginAttempts)
                .where(LoginAttempts.window_ends_at <= now)
            )
    finally:
        await engine.dispose()
    assert left == 0


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("not an address", None),
    ],
)
def test_address_subject(address: str, subject: str | None) -> None:
    assert address_subject(address) == subject
