"""The auth HTTP API, end to end through the app, on MariaDB and SQLite."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

from services.auth.keys import KEY_FILE_NAME, generate_private_key_pem
from services.auth.models import RefreshToken
from services.auth.service import hash_refresh_token
from shared.settings import Settings
from shared.tokens import JwksCache, TokenVerifier
from tests.auth.conftest import (
    PASSWORD,
    login,
    make_settings,
    new_email,
    register,
    running_auth,
)


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def test_register_creates_user_with_normalised_email(client: httpx.AsyncClient) -> None:
    email = new_email()
    response = await client.post(
        "/v1/auth/register", json={"email": email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == email
    assert len(body["id"]) == 32
    assert set(body) == {"id", "email"}


async def test_register_same_email_in_other_case_is_taken(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    response = await client.post(
        "/v1/auth/register", json={"email": email.title(), "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "email_taken"


async def test_racing_registrations_of_one_email_create_one_user(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    responses = await asyncio.gather(
        *(
            client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"email_taken"}


@pytest.mark.parametrize(
    "password",
    ["short1!", "password", "12345678", "QwertyUIOP", "x" * 129],
    ids=["short", "common", "digits", "common-any-case", "too-long"],
)
async def test_register_rejects_weak_password(client: httpx.AsyncClient, password: str) -> None:
    response = await client.post(
        "/v1/auth/register", json={"email": new_email(), "password": password}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "weak_password"


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", ""])
async def test_register_rejects_bad_email(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


async def test_login_returns_token_pair(client: httpx.AsyncClient, settings: Settings) -> None:
    email = new_email()
    user_id = await register(client, email)
    response = await login(client, email.upper())
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl
    assert body["refresh_token"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id
    assert claims["email"] == email
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl
    assert claims["jti"]


async def test_login_failures_look_the_same(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    wrong_password = await login(client, email, "not the password")
    unknown_user = await login(client, new_email())
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()
    assert wrong_password.json()["code"] == "invalid_credentials"


async def test_login_needs_form_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/login", data={"username": new_email()})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


async def test_me_answers_who_the_token_is_for(client: httpx.AsyncClient) -> None:
    email = new_email()
    user_id = await register(client, email)
    tokens = (await login(client, email)).json()
    response = await client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json()["id"] == user_id
    assert response.json()["email"] == email
    # The account as it is now: the web page shows admins their view, others a "verify" hint.
    assert {"email_verified", "admin", "disabled", "limits"} <= response.json().keys()


async def test_me_without_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/auth/me")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_me_with_bad_token_is_401(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    tokens = (await login(client, email)).json()
    for token in ("garbage", tokens["refresh_token"], tokens["access_token"][:-4] + "AAAA"):
        response = await client.get("/v1/auth/me", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


async def test_refresh_rotates_the_refresh_token(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    first = (await login(client, email)).json()
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["token_type"] == "bearer"
    assert second["refresh_token"] != first["refresh_token"]
    me = await client.get("/v1/auth/me", headers=bearer(second["access_token"]))
    assert me.json()["email"] == email
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200


async def test_refresh_reuse_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    stolen = (await login(client, email)).json()["refresh_token"]
    other_login = (await login(client, email)).json()["refresh_token"]
    rotated = (await refresh(client, stolen)).json()["refresh_token"]

    reuse = await refresh(client, stolen)
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "invalid_token"

    descendant = await refresh(client, rotated)
    assert descendant.status_code == 401
    assert descendant.json()["code"] == "invalid_token"
    # Only the family of the stolen token ends; the user's other sessions carry on.
    assert (await refresh(client, other_login)).status_code == 200


async def test_expired_refresh_token_is_401(client: httpx.AsyncClient, database_url: str) -> None:
    email = new_email()
    await register(client, email)
    refresh_token = (await login(client, email)).json()["refresh_token"]
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(RefreshToken)
                .where(RefreshToken.token_hash == hash_refresh_token(refresh_token))
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
    finally:
        await engine.dispose()
    response = await refresh(client, refresh_token)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    response = await refresh(client, "never-issued")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_jwks_publishes_the_signing_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert key["kid"]
    assert key["x"]
    assert "d" not in key

    email = new_email()
    await register(client, email)
    access_token = (await login(client, email)).json()["access_token"]
    assert jwt.get_unverified_header(access_token)["kid"] == key["kid"]
    verifier = TokenVerifier(response.json(), issuer="video2mp3-auth", audience="video2mp3")
    assert verifier.verify(access_token).email == email


async def test_jwks_cache_verifies_tokens_of_the_running_service(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    email = new_email()
    user_id = await register(client, email)
    access_token = (await login(client, email)).json()["access_token"]
    cache = JwksCache(
        client, ["http://auth.test"], issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    claims = await cache.verify(access_token)
    assert (claims.user_id, claims.email) == (user_id, email)


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_generated_key_is_private_and_survives_restarts(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "var")
    kids = []
    for _ in range(2):
        async with running_auth(settings) as client:
            kids.append((await client.get("/.well-known/jwks.json")).json()["keys"][0]["kid"])
    assert kids[0] == kids[1]
    key_file = settings.secrets_dir / KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


async def test_configured_key_is_used(database_url: str, tmp_path: Path) -> None:
    pem = generate_private_key_pem()
    key_file = tmp_path / "given.pem"
    key_file.write_bytes(pem)
    kids = []
    for overrides in (
        {"jwt_private_key": pem.decode()},
        {"jwt_private_key": pem.decode().replace("\n", "\\n")},  # as one env line
        {"jwt_private_key_file": key_file},
    ):
        settings = make_settings(database_url, tmp_path / "var", **overrides)
        async with running_auth(settings) as client:
            kids.append((await client.get("/.well-known/jwks.json")).json()["keys"][0]["kid"])
        assert not (settings.secrets_dir / KEY_FILE_NAME).exists()
    assert len(set(kids)) == 1
