"""Device tokens: strangers failing on purpose cannot lock a user out of a device they used.

Counting failed logins per account stops online guessing, but it also lets anyone lock a victim
out by failing on purpose, window after window. A successful login hands the client a device
token (signed by auth, for that account only); a later login that presents it is counted against
that device instead of the account. Strangers' failures then lock only logins from devices that
never logged in, and a guesser holding no token still meets the account's limit. A token that
is missing, expired, forged or for another account is simply not one: the login is counted
against the account, never refused for it.
"""

from __future__ import annotations

import time
import uuid

import jwt

from services.auth.keys import SigningKey
from shared.tokens import ALGORITHM

# Long enough that a phone used once a season stays known; each login renews it.
DEVICE_TOKEN_TTL = 180 * 24 * 3600


class DeviceTokens:
    def __init__(self, signing_key: SigningKey, issuer: str, audience: str) -> None:
        self._key = signing_key
        self._issuer = issuer
        # Never the access tokens' audience: a device token opens no API.
        self._audience = f"{audience}/device"

    def device_of(self, token: str | None, account: str) -> str | None:
        """The device a token names, if it is valid and was given to `account`."""
        if not token:
            return None
        try:
            claims = jwt.decode(
                token,
                self._key.private_key.public_key(),
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub", "aud", "iss", "dev"]},
            )
        except jwt.PyJWTError:
            return None
        device = claims["dev"]
        if claims["sub"] != account or not isinstance(device, str) or len(device) != 32:
            return None
        return device

    def issue(self, account: str, device: str | None = None) -> str:
        """A token for `device` (a new one if None) of `account`, valid DEVICE_TOKEN_TTL."""
        now = int(time.time())
        return self._key.sign(
            {
                "sub": account,
                "dev": device or uuid.uuid4().hex,
                "aud": self._audience,
                "iss": self._issuer,
                "iat": now,
                "exp": now + DEVICE_TOKEN_TTL,
            }
        )
