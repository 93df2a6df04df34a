"""Request and response bodies of the auth API."""

from __future__ import annotations

from pydantic import BaseModel, EmailStr, Field

from shared.accounts import (
    Account,
    AccountPatch,
    AccountsResponse,
    InviteRequest,
    InviteResponse,
    LoginResponse,
    PasswordResetConfirm,
    PasswordResetRequest,
    TokenResponse,
    UserResponse,
    VerifyRequest,
)

__all__ = [
    "Account",
    "AccountPatch",
    "AccountsResponse",
    "InviteRequest",
    "InviteResponse",
    "Jwk",
    "JwksResponse",
    "LoginResponse",
    "PasswordResetConfirm",
    "PasswordResetRequest",
    "RefreshRequest",
    "RegisterRequest",
    "TokenResponse",
    "UserResponse",
    "VerifyRequest",
]


class RegisterRequest(BaseModel):
    email: EmailStr
    # The strength rules live in the service so that they answer `weak_password`, not a generic
    # validation error; this bound only keeps absurd bodies out.
    password: str = Field(max_length=4096)
    invite: str | None = Field(default=None, max_length=256, description="when REGISTRATION=invite")


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=512)


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JwksResponse(BaseModel):
    keys: list[Jwk]
