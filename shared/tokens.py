"""Local verification of the access tokens the auth service signs.

Services check a token against auth's published public keys (JWKS) instead of calling auth on
every request: auth is asked only for its keys, once, and again when a token names a key we have
not seen (auth rotated its signing key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm
from pydantic import BaseModel, ValidationError

from shared.aio import keep
from shared.errors import ErrorCode, Unauthorized, Unavailable

log = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
JWKS_PATH = "/.well-known/jwks.json"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss"]
JWKS_REFETCH_INTERVAL = 30.0
# Keys this old are fetched again behind the requests that use them: a key auth withdraws
# (compromised, retired) stops opening the API within this long, remembered tokens included.
JWKS_MAX_AGE = 300.0
# After a failed first load, requests fail at once for this long instead of each waiting for
# its own fetch in turn: with auth hung, N waiting requests would otherwise take N timeouts.
JWKS_FIRST_LOAD_RETRY = 1.0


class Claims(BaseModel):
    """Who a verified access token speaks for."""

    user_id: str
    email: str
    # Whether auth had proven the address when it issued the token: job mails go only to those.
    email_verified: bool = False
    # Expiry (Unix seconds), so a verified token can be remembered exactly as long as it is valid.
    expires_at: float = 0.0
    # What an API key may do; None for a login's access token, which may do everything.
    scopes: frozenset[str] | None = None
    # The API key these claims come from, if they do.
    key_id: str | None = None


# Verified tokens remembered per process: an EdDSA check costs more than the rest of a status
# request. Bounded; each entry dies with its token.
VERIFIED_CACHE_SIZE = 4096


def _auth_unreachable() -> Unavailable:
    return Unavailable("the auth service is unreachable", code=ErrorCode.AUTH_UNAVAILABLE)


def _invalid_token() -> Unauthorized:
    # One answer for every failure: telling a client *why* its token failed helps only attackers.
    return Unauthorized("invalid or expired token", code=ErrorCode.INVALID_TOKEN)


def _ed25519_keys(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 signing keys of a JWKS document, by kid; anything else is ignored."""
    keys: dict[str, Ed25519PublicKey] = {}
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        return keys
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or entry.get("kty") != "OKP"
            or entry.get("crv") != "Ed25519"
            or entry.get("alg", ALGORITHM) != ALGORITHM
            or entry.get("use", "sig") != "sig"
            or "d" in entry  # a private key published by mistake is not something to trust
        ):
            continue
        try:
            key = OKPAlgorithm.from_jwk(entry)
        except jwt.PyJWTError:
            log.warning("ignoring malformed JWK %s", kid)
            continue
        if isinstance(key, Ed25519PublicKey):
            keys[kid] = key
    return keys


def token_key_id(token: str) -> str | None:
    """The `kid` a token claims in its (still unverified) header, if any."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


class TokenVerifier:
    """Checks access tokens against a fixed set of public keys."""

    def __init__(self, jwks: Mapping[str, Any], *, issuer: str, audience: str) -> None:
        self._keys = _ed25519_keys(jwks)
        self._issuer = issuer
        self._audience = audience

    def knows(self, kid: str | None) -> bool:
        return kid is not None and kid in self._keys

    def verify(self, token: str) -> Claims:
        key = self._keys.get(token_key_id(token) or "")
        if key is None:
            raise _invalid_token()
        try:
            payload = jwt.decode(
                token,
                key,
                # Pinned, never read from the token: this is what defeats `alg: none` and
                # HS256-signed-with-the-public-key forgeries.
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
            return Claims(
                user_id=payload["sub"],
                email=payload["email"],
                email_verified=payload.get("email_verified") is True,
                expires_at=float(payload["exp"]),
            )
        except (jwt.PyJWTError, KeyError, ValidationError) as exc:
            raise _invalid_token() from exc


async def fetch_jwks(client: httpx.AsyncClient, auth_urls: list[str]) -> dict[str, Any]:
    """The JWKS of the first auth instance that answers; timeouts are the client's."""
    for base in auth_urls:
        url = base.rstrip("/") + JWKS_PATH
        try:
            response = await client.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("auth instance %s gave no JWKS: %s", base, type(exc).__name__)
            continue
        if isinstance(document, dict) and isinstance(document.get("keys"), list):
            return document
        log.warning("auth instance %s answered something that is not a JWKS", base)
    raise _auth_unreachable()


class JwksCache:
    """A TokenVerifier whose keys are fetched from auth lazily and refreshed on rotation."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        auth_urls: list[str],
        *,
        issuer: str,
        audience: str,
        refetch_interval: float = JWKS_REFETCH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._auth_urls = auth_urls
        self._issuer = issuer
        self._audience = audience
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._verifier: TokenVerifier | None = None
        self._fetched_at: float | None = None
        self._first_load_failed_at: float | None = None
        # Many requests may see the new kid at once; one of them fetches, the rest reuse it.
        self._lock = asyncio.Lock()
        # Each verified token with the key that signed it, which must still be published.
        self._verified: dict[str, tuple[Claims, str | None]] = {}
        self._aging: asyncio.Task[TokenVerifier] | None = None

    async def verify(self, token: str) -> Claims:
        self._refresh_if_old()
        known = self._verified.get(token)
        if known is not None:
            claims, signer = known
            verifier = self._verifier
            if claims.expires_at > time.time() and verifier is not None and verifier.knows(signer):
                return claims
            del self._verified[token]
        kid = token_key_id(token)
        verifier = self._verifier
        if verifier is None or not verifier.knows(kid):
            verifier = await self._refresh(first_load=verifier is None)
        claims = verifier.verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (claims, kid)
        return claims

    def _refresh_if_old(self) -> None:
        """Start fetching keys older than JWKS_MAX_AGE, without holding up this request."""
        fetched_at = self._fetched_at
        if self._verifier is None or fetched_at is None:
            return
        if self._clock() - fetched_at < JWKS_MAX_AGE:
            return
        if self._aging is None or self._aging.done():
            self._aging = asyncio.create_task(self._refresh(first_load=False))
            keep(self._aging, "refreshing the JWKS")

    async def _refresh(self, *, first_load: bool) -> TokenVerifier:
        async with self._lock:
            if first_load and self._verifier is not None:
                return self._verifier  # another request loaded it while we waited
            if self._verifier is not None and not self._may_refetch():
                return self._verifier
            failed_at = self._first_load_failed_at
            if (
                self._verifier is None
                and failed_at is not None
                and self._clock() - failed_at < JWKS_FIRST_LOAD_RETRY
            ):
                raise _auth_unreachable()
            self._fetched_at = self._clock()
            try:
                jwks = await fetch_jwks(self._client, self._auth_urls)
            except Unavailable:
                if self._verifier is None:
                    self._first_load_failed_at = self._clock()
                    raise
                # Keep serving the keys we have: a token with an unknown kid is then rejected,
                # tokens signed with known keys still pass while auth is down.
                return self._verifier
            self._verifier = TokenVerifier(jwks, issuer=self._issuer, audience=self._audience)
            return self._verifier

    def _may_refetch(self) -> bool:
        return (
            self._fetched_at is None or self._clock() - self._fetched_at >= self._refetch_interval
        )


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
