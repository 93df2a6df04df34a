"""Forged and broken access tokens, through the running auth app: every one is a 401."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from services.auth.keys import SigningKey, generate_private_key_pem
from shared.settings import Settings
from tests.auth.conftest import make_settings, new_email, register, running_auth
from tests.auth.test_tokens import b64, claims, hand_made_token

Forge = Callable[[SigningKey, Settings], str]


def _claims(settings: Settings, **overrides: object) -> dict[str, object]:
    return claims(**{"iss": settings.jwt_issuer, "aud": settings.jwt_audience, **overrides})


def alg_none(key: SigningKey, settings: Settings) -> str:
    return hand_made_token({"alg": "none", "typ": "JWT", "kid": key.kid}, _claims(settings), None)


def hs256_with_public_key(key: SigningKey, settings: Settings) -> str:
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    return hand_made_token(header, _claims(settings), public_pem)


def expired(key: SigningKey, settings: Settings) -> str:
    now = int(time.time())
    return key.sign(_claims(settings, iat=now - 120, exp=now - 60))


def issued_in_the_future(key: SigningKey, settings: Settings) -> str:
    now = int(time.time())
    return key.sign(_claims(settings, iat=now + 3600, exp=now + 7200))


def wrong_audience(key: SigningKey, settings: Settings) -> str:
    return key.sign(_claims(settings, aud="another-service"))


def wrong_issuer(key: SigningKey, settings: Settings) -> str:
    return key.sign(_claims(settings, iss="evil-auth"))


def tampered_payload(key: SigningKey, settings: Settings) -> str:
    header, _, signature = key.sign(_claims(settings)).split(".")
    forged = b64(json.dumps(_claims(settings, sub="someone-else")).encode())
    return f"{header}.{forged}.{signature}"


def other_key_same_kid(key: SigningKey, settings: Settings) -> str:
    impostor = SigningKey(SigningKey.from_pem(generate_private_key_pem()).private_key, key.kid)
    return impostor.sign(_claims(settings))


def missing(claim: str) -> Forge:
    def forge(key: SigningKey, settings: Settings) -> str:
        return key.sign(_claims(settings, **{claim: None}))

    forge.__name__ = f"missing_{claim}"
    return forge


FORGERIES: list[Forge] = [
    alg_none,
    hs256_with_public_key,
    expired,
    issued_in_the_future,
    wrong_audience,
    wrong_issuer,
    tampered_payload,
    other_key_same_kid,
    *(missing(claim) for claim in ("exp", "iat", "sub", "aud", "iss")),
]


@pytest.fixture
def pem() -> bytes:
    return generate_private_key_pem()


@pytest.fixture
def key_settings(database_url: str, tmp_path: Path, pem: bytes) -> Settings:
    return make_settings(database_url, tmp_path / "var", jwt_private_key=pem.decode())


@pytest.fixture
async def keyed_client(key_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_auth(key_settings) as client:
        yield client


async def test_a_genuine_token_passes(
    keyed_client: httpx.AsyncClient, key_settings: Settings, pem: bytes
) -> None:
    """The control: the same key and claims, unforged, are accepted."""
    email = new_email()
    user_id = await register(keyed_client, email)
    token = SigningKey.from_pem(pem).sign(_claims(key_settings, sub=user_id, email=email))
    response = await keyed_client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["email"]) == (user_id, email)


@pytest.mark.parametrize("forge", FORGERIES, ids=lambda f: f.__name__)
async def test_forged_token_is_401(
    keyed_client: httpx.AsyncClient, key_settings: Settings, pem: bytes, forge: Forge
) -> None:
    token = forge(SigningKey.from_pem(pem), key_settings)
    response = await keyed_client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid or expired token", "code": "invalid_token"}
    assert response.headers["www-authenticate"] == "Bearer"
