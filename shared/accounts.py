"""The public shapes of accounts and tokens: answered by auth, documented by the gateway."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# A device token is about 500 characters; anything twice as long is not one.
DEVICE_TOKEN_MAX_LENGTH = 1024


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
