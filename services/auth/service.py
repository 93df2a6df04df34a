"""What the auth service does: register, log in, rotate refresh tokens. No HTTP in here."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from email_validator import EmailNotValidError, validate_email

from services.auth import passwords
from services.auth.devices import DeviceTokens
from services.auth.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    RefreshTokenReused,
)
from services.auth.keys import SigningKey
from services.auth.models import RefreshToken, User
from services.auth.repository import AuthRepository
from services.auth.throttle import LoginThrottle, account_subject
from shared.errors import ErrorCode, Unauthorized
from shared.settings import Settings


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    device_token: str | None = None
    """From a login only: what this client presents at its next login (see `devices`)."""


def normalise_email(email: str) -> str:
    """One form of an address however it was typed, for register, login and the throttle alike:
    email-validator's normalised form (Unicode NFC, an IDNA domain in Unicode), lower-cased."""
    email = unicodedata.normalize("NFC", email.strip())
    # An invalid address has no account; the throttle still counts it as typed.
    with contextlib.suppress(EmailNotValidError):
        email = validate_email(email, check_deliverability=False).normalized
    return email.lower()


def hash_refresh_token(token: str) -> str:
    # A plain SHA-256 suffices: the token is 256 random bits, so there is nothing to brute-force,
    # and a stolen table yields no usable token.
    return hashlib.sha256(token.encode()).hexdigest()


def _new_id() -> str:
    return uuid.uuid4().hex


class AuthService:
    def __init__(
        self,
        repository: AuthRepository,
        signing_key: SigningKey,
        settings: Settings,
        throttle: LoginThrottle,
        hashing: passwords.HashingLanes,
    ):
        self._repository = repository
        self._signing_key = signing_key
        self._settings = settings
        self._throttle = throttle
        self._hashing = hashing
        self._devices = DeviceTokens(signing_key, settings.jwt_issuer, settings.jwt_audience)

    async def register(self, email: str, password: str, client_address: str | None) -> User:
        # The whole sign-up waits in the new-password lane: a burst beyond its short line is
        # refused before it costs even a database write.
        async with self._hashing.new_password.slot():
            await self._throttle.count_signup(client_address)
            email = normalise_email(email)
            passwords.check_password_strength(password)
            if await self._repository.get_user_by_email(email) is not None:
                raise EmailTaken()
            # No transaction held open through the hash: on SQLite it would block every other
            # request's commit (a login's among them) until the hash is done.
            await self._repository.end_reads()
            user = User(
                id=_new_id(),
                email=email,
                password_hash=await self._hashing.hash_new(password),
                created_at=datetime.now(UTC),
            )
            await self._repository.add_user(user)
            return user

    async def login(
        self,
        email: str,
        password: str,
        client_address: str | None,
        device_token: str | None = None,
    ) -> TokenPair:
        email = normalise_email(email)
        account = account_subject(email)
        user = await self._repository.get_user_by_email(email)
        await self._repository.end_reads()
        device = self._devices.device_of(device_token, account, user)
        attempt = await self._throttle.count(email, client_address, device)
        if len(password) > passwords.MAX_PASSWORD_LENGTH:
            raise InvalidCredentials()  # no such password was ever accepted; skip the hashing
        if user is None:
            await passwords.burn_verify_time(password)
            raise InvalidCredentials()
        valid, new_hash = await passwords.verify_password(password, user.password_hash)
        if not valid:
            raise InvalidCredentials()
        await self._throttle.succeeded(attempt)
        if new_hash is not None:
            user.password_hash = new_hash  # hashing parameters were raised since this one was made
            await self._repository.save()
        pair = await self._issue_tokens(user, family_id=_new_id())
        return replace(pair, device_token=self._devices.issue(account, user, device))

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = datetime.now(UTC)
        stored = await self._repository.get_refresh_token_by_hash(hash_refresh_token(refresh_token))
        if stored is None or stored.revoked_at is not None:
            raise InvalidRefreshToken()
        if stored.used_at is not None:
            await self._revoke_family(stored.family_id, now)
        if stored.expires_at <= now:
            raise InvalidRefreshToken()
        if not await self._repository.claim_refresh_token(stored.id, now):
            # Another request rotated it between our read and our update: that is reuse too.
            await self._revoke_family(stored.family_id, now)
        user = await self._repository.get_user(stored.user_id)
        if user is None:
            raise InvalidRefreshToken()
        return await self._issue_tokens(user, family_id=stored.family_id)

    async def get_user(self, user_id: str) -> User:
        user = await self._repository.get_user(user_id)
        if user is None:
            # A valid token for a user deleted since it was issued.
            raise Unauthorized("this account no longer exists", code=ErrorCode.INVALID_TOKEN)
        return user

    async def _revoke_family(self, family_id: str, now: datetime) -> NoReturn:
        """A rotated token came back, so one of its holders is not its owner: end the family."""
        await self._repository.revoke_refresh_family(family_id, now)
        raise RefreshTokenReused()

    async def _issue_tokens(self, user: User, *, family_id: str) -> TokenPair:
        now = datetime.now(UTC)
        access_ttl = self._settings.access_token_ttl
        issued_at = int(now.timestamp())
        access_token = self._signing_key.sign(
            {
                "sub": user.id,
                "email": user.email,
                "iss": self._settings.jwt_issuer,
                "aud": self._settings.jwt_audience,
                "iat": issued_at,
                "exp": issued_at + access_ttl,
                "jti": _new_id(),
            }
        )
        refresh_token = secrets.token_urlsafe(32)
        await self._repository.add_refresh_token(
            RefreshToken(
                id=_new_id(),
                token_hash=hash_refresh_token(refresh_token),
                family_id=family_id,
                user_id=user.id,
                created_at=now,
                expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl),
            )
        )
        return TokenPair(access_token, access_ttl, refresh_token)
