"""Emailed download links: an HMAC-signed, expiring token naming one job.

Signed by notification, verified by the gateway, both with the key in `Settings.link_key`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from shared.errors import ErrorCode, Gone, NotFound

# Seconds since the epoch: ASCII digits, and few enough for any date we sign.
_EXPIRY = re.compile(r"[0-9]{1,12}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def sign_download_token(key: bytes, job_id: str, ttl: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl)
    body = f"{job_id}.{expires}"
    return f"{body}.{_mac(key, body)}"


def verify_download_token(key: bytes, token: str, now: float | None = None) -> str:
    """Return the job id the token names; NotFound if forged, Gone if expired."""
    parts = token.split(".")
    # Every token we sign is ASCII, and compare_digest refuses str with anything else in it.
    if not token.isascii() or len(parts) != 3 or _EXPIRY.fullmatch(parts[1]) is None:
        raise NotFound("no such download link", code=ErrorCode.LINK_INVALID)
    job_id, expires, mac = parts
    if not hmac.compare_digest(mac, _mac(key, f"{job_id}.{expires}")):
        raise NotFound("no such download link", code=ErrorCode.LINK_INVALID)
    if int(expires) < (now if now is not None else time.time()):
        raise Gone("this download link has expired", code=ErrorCode.LINK_EXPIRED)
    return job_id


def download_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/v1/downloads/{token}"
