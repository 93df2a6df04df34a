"""Password hashing (Argon2id) and the rules a new password must pass.

Argon2 is deliberately slow and memory-hungry, so hashing and verifying run in a worker thread:
the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from services.auth.errors import WeakPassword

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

_hasher = PasswordHash((Argon2Hasher(),))


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of passwords too common to accept (lower case), read once."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(
        line.strip().lower() for line in lines if line.strip() and not line.startswith("#")
    )


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    if password.lower() in common_passwords():
        raise WeakPassword("this password is too common; choose another one")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Whether the password matches, and a fresh hash when the stored one uses old parameters."""
    return await asyncio.to_thread(_hasher.verify_and_update, password, password_hash)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password anyone has: it only burns time")


async def prepare_dummy_hash() -> None:
    """Make the dummy hash at start-up, or the first unknown email would take twice as long."""
    await asyncio.to_thread(_dummy_hash)


async def burn_verify_time(password: str) -> None:
    """Spend what a real verification costs, so unknown emails cannot be told apart by timing."""

    def verify_against_dummy() -> None:
        _hasher.verify(password, _dummy_hash())

    await asyncio.to_thread(verify_against_dummy)
