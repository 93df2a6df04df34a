"""shared.tokens: local access-token verification and the JWKS cache (no database needed)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from services.auth.keys import SigningKey, generate_private_key_pem
from shared.errors import ErrorCode, Unauthorized, Unavailable
from shared.tokens import (
    JWKS_MAX_AGE,
    Claims,
    JwksCache,
    TokenVerifier,
    bearer_token,
    fetch_jwks,
)

ISSUER = "video2mp3-auth"
AUDIENCE = "video2mp3"
JWKS_BASE = "http://jwks.test"


def new_key() -> SigningKey:
    return SigningKey.from_pem(generate_private_key_pem())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": uuid.uuid4().hex,
        "email": "someone@example.com",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token built without PyJWT, which refuses to produce most of these forgeries."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture
def key() -> SigningKey:
    return new_key()


@pytest.fixture
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier(key.jwks(), issuer=ISSUER, audience=AUDIENCE)


def assert_rejected(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(token)
    assert caught.value.code == ErrorCode.INVALID_TOKEN
    assert caught.value.status_code == 401


def test_valid_token_gives_its_claims(key: SigningKey, verifier: TokenVerifier) -> None:
    values = claims()
    assert verifier.verify(key.sign(values)) == Claims(
        user_id=values["sub"], email=values["email"], expires_at=float(values["exp"])
    )


def test_alg_none_is_rejected(key: SigningKey, verifier: TokenVerifier) -> None:
    token = hand_made_token({"alg": "none", "typ": "JWT", "kid": key.kid}, claims(), None)
    assert_rejected(verifier, token)


def test_hs256_signed_with_the_public_key_is_rejected(
    key: SigningKey, verifier: TokenVerifier
) -> None:
    public = key.private_key.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        key.public_jwk()["x"].encode(),
    ):
        token = hand_made_token({"alg": "HS256", "typ": "JWT", "kid": key.kid}, claims(), secret)
        assert_rejected(verifier, token)


def test_expired_token_is_rejected(key: SigningKey, verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert_rejected(verifier, key.sign(claims(iat=now - 120, exp=now - 60)))


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "someone-else"}, {"iss": "evil-auth"}],
    ids=["wrong-audience", "wrong-issuer"],
)
def test_wrong_audience_or_issuer_is_rejected(
    key: SigningKey, verifier: TokenVerifier, overrides: dict[str, str]
) -> None:
    assert_rejected(verifier, key.sign(claims(**overrides)))


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "aud", "iss", "email"])
def test_token_missing_a_claim_is_rejected(
    key: SigningKey, verifier: TokenVerifier, missing: str
) -> None:
    assert_rejected(verifier, key.sign(claims(**{missing: None})))


def test_tampered_payload_is_rejected(key: SigningKey, verifier: TokenVerifier) -> None:
    header, _, signature = key.sign(claims()).split(".")
    forged = b64(json.dumps(claims(sub="someone-else")).encode())
    assert_rejected(verifier, f"{header}.{forged}.{signature}")


def test_unknown_kid_is_rejected(verifier: TokenVerifier) -> None:
    assert_rejected(verifier, new_key().sign(claims()))


def test_token_without_kid_is_rejected(key: SigningKey, verifier: TokenVerifier) -> None:
    assert_rejected(verifier, jwt.encode(claims(), key.private_key, algorithm="EdDSA"))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b"])
def test_malformed_token_is_rejected(verifier: TokenVerifier, token: str) -> None:
    assert_rejected(verifier, token)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer  abc.def ", "abc.def"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


class JwksServer:
    """A small real HTTP app serving a JWKS that a test can swap, like auth rotating its key."""

    def __init__(self, key: SigningKey) -> None:
        self.jwks: dict[str, Any] = key.jwks()
        self.requests = 0
        self.app = FastAPI()

        @self.app.get("/.well-known/jwks.json")
        async def jwks() -> dict[str, Any]:
            self.requests += 1
            return self.jwks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def jwks_server(key: SigningKey) -> JwksServer:
    return JwksServer(key)


@pytest.fixture
async def http(jwks_server: JwksServer) -> AsyncIterator[httpx.AsyncClient]:
    mounts = {JWKS_BASE: httpx.ASGITransport(jwks_server.app)}
    async with httpx.AsyncClient(mounts=mounts, timeout=2.0) as client:
        yield client


async def test_fetch_jwks_falls_back_to_the_next_instance(
    http: httpx.AsyncClient, key: SigningKey
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    assert await fetch_jwks(http, [down, JWKS_BASE]) == key.jwks()


async def test_fetch_jwks_with_no_instance_up_is_unavailable(http: httpx.AsyncClient) -> None:
    with pytest.raises(Unavailable) as caught:
        await fetch_jwks(http, [f"http://127.0.0.1:{free_port()}", f"{JWKS_BASE}/nothing-here"])
    assert caught.value.code == ErrorCode.AUTH_UNAVAILABLE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_jwks_cache_loads_lazily_and_follows_rotation(
    http: httpx.AsyncClient, jwks_server: JwksServer, key: SigningKey
) -> None:
    clock = FakeClock()
    cache = JwksCache(http, [JWKS_BASE], issuer=ISSUER, audience=AUDIENCE, clock=clock)
    assert jwks_server.requests == 0
    await cache.verify(key.sign(claims()))
    await cache.verify(key.sign(claims()))
    assert jwks_server.requests == 1

    rotated = new_key()
    jwks_server.jwks = {"keys": [rotated.public_jwk(), key.public_jwk()]}
    # Within 30 s of the last fetch, an unknown kid is rejected without asking auth again.
    clock.now += 10
    with pytest.raises(Unauthorized):
        await cache.verify(rotated.sign(claims()))
    assert jwks_server.requests == 1

    clock.now += 30
    assert (await cache.verify(rotated.sign(claims()))).email == "someone@example.com"
    assert jwks_server.requests == 2
    # Unknown kids (forgeries) keep being refused, and cannot make us hammer auth.
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await cache.verify(new_key().sign(claims()))
    assert jwks_server.requests == 2


async def test_a_withdrawn_key_stops_opening_the_api(
    http: httpx.AsyncClient, jwks_server: JwksServer, key: SigningKey
) -> None:
    clock = FakeClock()
    cache = JwksCache(http, [JWKS_BASE], issuer=ISSUER, audience=AUDIENCE, clock=clock)
    token = key.sign(claims())
    assert (await cache.verify(token)).email == "someone@example.com"
    # Auth withdraws the key (compromised): it publishes only a new one.
    jwks_server.jwks = {"keys": [new_key().public_jwk()]}
    clock.now += JWKS_MAX_AGE - 1
    await cache.verify(token)  # remembered, and the keys are not old yet
    assert jwks_server.requests == 1
    clock.now += 1
    for _ in range(100):  # old keys are fetched again behind the requests
        try:
            await cache.verify(token)
        except Unauthorized:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("a token signed with a withdrawn key kept working")
    assert jwks_server.requests == 2


async def test_jwks_cache_without_auth_is_unavailable(key: SigningKey) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:
        cache = JwksCache(
            client, [f"http://127.0.0.1:{free_port()}"], issuer=ISSUER, audience=AUDIENCE
        )
        with pytest.raises(Unavailable):
            await cache.verify(key.sign(claims()))


async def test_requests_waiting_on_a_hung_auth_fail_together(key: SigningKey) -> None:
    # An auth instance that accepts connections and never answers (hung, or SIGSTOPped).
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(timeout=0.5) as client:
            cache = JwksCache(
                client, [f"http://127.0.0.1:{port}"], issuer=ISSUER, audience=AUDIENCE
            )
            started = time.monotonic()
            results = await asyncio.gather(
                *(cache.verify(key.sign(claims())) for _ in range(6)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
    finally:
        server.close()
    assert all(isinstance(r, Unavailable) for r in results), results
    # One fetch's timeout, not six of them one after another.
    assert elapsed < 1.5, elapsed
