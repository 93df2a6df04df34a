"""The public shapes of accounts and tokens: answered by auth, read by the other services.

Auth owns every account. Other services learn what they need of one (its limits, whether it is
disabled, whether its address is verified) from auth's internal account endpoint through
`AccountDirectory`, which remembers each answer a few seconds.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, EmailStr, Field, ValidationError

from shared.errors import ErrorCode, Unavailable

# A device token is about 500 characters; anything twice as long is not one.
DEVICE_TOKEN_MAX_LENGTH = 1024

# Served by auth only (the gateway forwards nothing under /internal/).
ACCOUNT_PATH = "/internal/v1/accounts/{user_id}"


class UserResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class LoginResponse(TokenResponse):
    device_token: str
    """Presented at this client's next login (the `device_token` form field): strangers'
    failed logins on the account do not lock out a device that logged in before."""


class AccountLimits(BaseModel):
    """Limits an admin set for one account. None: the installation's default
    (USER_MAX_ACTIVE_JOBS, USER_STORAGE_BYTES, USER_JOBS_PER_DAY); 0: unlimited."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    max_active_jobs: int | None = Field(default=None, ge=0)
    storage_bytes: int | None = Field(default=None, ge=0)
    jobs_per_day: int | None = Field(default=None, ge=0)


def effective_limit(value: int | None, default: int) -> int:
    """The limit that applies: the account's own, else the installation's (0 = unlimited)."""
    return default if value is None else value


class Account(BaseModel):
    """What auth knows of an account now (`GET /v1/auth/me`, the admin's list)."""

    model_config = ConfigDict(frozen=True)

    id: str
    email: str
    email_verified: bool
    admin: bool
    disabled: bool
    created_at: datetime
    limits: AccountLimits = AccountLimits()


class VerifyRequest(BaseModel):
    token: str = Field(min_length=1, max_length=256, description="from the verification mail")


class PasswordResetRequest(BaseModel):
    email: EmailStr


class PasswordResetConfirm(BaseModel):
    token: str = Field(min_length=1, max_length=256, description="from the reset mail")
    password: str = Field(max_length=4096)


class LimitsPatch(AccountLimits):
    """The limits to change; a limit sent as null goes back to the installation's default."""

    model_config = ConfigDict(extra="forbid")


class AccountPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = None
    admin: bool | None = None
    limits: LimitsPatch | None = None


class AccountsResponse(BaseModel):
    items: list[Account]


class InviteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_hours: float = Field(default=168.0, gt=0, le=24 * 365)


class InviteResponse(BaseModel):
    invite: str
    expires_at: datetime


# Long enough to spare auth a call per request, short enough that an admin's change (a disabled
# account, new limits) takes effect within seconds.
ACCOUNT_CACHE_SECONDS = 5.0
ACCOUNT_CACHE_SIZE = 4096


class AccountDirectory:
    """Accounts as auth answers them, remembered ACCOUNT_CACHE_SECONDS per process."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        auth_urls: list[str],
        *,
        ttl: float = ACCOUNT_CACHE_SECONDS,
    ) -> None:
        self._client = client
        self._auth_urls = auth_urls
        self._ttl = ttl
        self._known: dict[str, tuple[float, Account | None]] = {}

    async def get(self, user_id: str) -> Account | None:
        """The account, or None when auth has no such account (deleted). When no auth instance
        answers: the last answer this process had, however old (so an account seen disabled
        stays refused through an outage), else Unavailable (`auth_unavailable`)."""
        now = time.monotonic()
        known = self._known.get(user_id)
        if known is not None and now - known[0] < self._ttl:
            return known[1]
        try:
            account = await self._fetch(user_id)
        except Unavailable:
            if known is None:
                raise
            return known[1]
        if len(self._known) >= ACCOUNT_CACHE_SIZE:
            self._known.pop(next(iter(self._known)))
        self._known[user_id] = (now, account)
        return account

    def forget(self, user_id: str) -> None:
        """Drop what this process remembers of the account (it was just changed here)."""
        self._known.pop(user_id, None)

    async def _fetch(self, user_id: str) -> Account | None:
        path = ACCOUNT_PATH.format(user_id=user_id)
        for base in self._auth_urls:
            try:
                response = await self._client.get(base.rstrip("/") + path)
            except httpx.HTTPError:
                continue
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                continue
            try:
                return Account.model_validate_json(response.content)
            except ValidationError:
                continue
        raise Unavailable("the auth service is unreachable", code=ErrorCode.AUTH_UNAVAILABLE)
