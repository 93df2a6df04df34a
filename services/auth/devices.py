"""Device tokens: strangers failing on purpose cannot lock a user out of a device they used.

Counting failed logins per account stops online guessing, but it also lets anyone lock a victim
out by failing on purpose, window after window. A successful login hands the client a device
token (signed by auth, for that account only); a later login that presents it is counted against
that device instead of the account. Strangers' failures then lock only logins from devices that
never logged in, and a guesser holding no token still meets the account's limit. A token that
is missing, expired, forged, for another account or from before the password last changed is
simply not one: the login is counted against the account, never refused for it.

Tokens die with the password they were given under (a fingerprint of its hash is in them):
whoever knew an old password, and had any number of tokens made with it, gets no guesses out
of them at the new one.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import jwt

from services.auth.keys import SigningKey
from services.auth.models import User
from shared.tokens import ALGORITHM

# Long enough that a phone used once a season stays known; each login renews it.
DEVICE_TOKEN_TTL = 180 * 24 * 3600


class DeviceTokens:
    def __init__(self, signing_key: SigningKey, issuer: str, audience: str) -> None:
        self._key = signing_key
        self._issuer = issuer
        # Never the access tokens' audience: a device token opens no API.
        self._audience = f"{audience}/device"

    def device_of(self, token: str | None, account: str, user: User | None) -> str | None:
        """The device a token names, if it is valid and was given to `account`, the `user` it
        names, under the password they have now."""
        if not token:
            return None
        # Checked whether or not the account exists: skipping the signature check for unknown
        # accounts would tell them apart by the time a login with any token takes.
        try:
            claims = jwt.decode(
                token,
                self._key.private_key.public_key(),
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub", "aud", "iss", "dev", "pwd"]},
            )
        except jwt.PyJWTError:
            return None
        device = claims["dev"]
        if (
            user is None
            or claims["sub"] != account
            or claims["pwd"] != _fingerprint(user)
            or not isinstance(device, str)
            or len(device) != 32
        ):
            return None
        return device

    def issue(self, account: str, user: User, device: str | None = None) -> str:
        """A token for `device` (a new one if None) of `account`, valid DEVICE_TOKEN_TTL."""
        now = int(time.time())
        return self._key.sign(
            {
                "sub": account,
                "pwd": _fingerprint(user),
                "dev": device or uuid.uuid4().hex,
                "aud": self._audience,
                "iss": self._issuer,
                "iat": now,
                "exp": now + DEVICE_TOKEN_TTL,
            }
        )


def _fingerprint(user: User) -> str:
    # Of the stored hash (salted), so it tells nothing about the password itself.
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:22]
