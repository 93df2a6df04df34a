"""Password hashing (Argon2id) and the rules a new password must pass.

Argon2 is deliberately slow and memory-hungry, so hashing and verifying run in a worker thread:
the event loop keeps serving other requests meanwhile. How many run at once is bounded by
`HashingLanes`: a burst of sign-ups must not take the CPU from people logging in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from services.auth.errors import TooManySignUps, WeakPassword

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


# One Argon2 hash takes about this long on a current core; it sizes the Retry-After of a refusal.
HASH_SECONDS = 0.25
# New passwords that may wait per lane slot; more are refused rather than queued for long.
NEW_PASSWORD_QUEUE_PER_SLOT = 4


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Lane:
    """At most `slots` hashes at once; beyond `max_waiting` callers in line, refuse at once."""

    def __init__(self, slots: int, max_waiting: int | None = None) -> None:
        self._slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self._max_waiting = max_waiting
        self._waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._max_waiting is not None and self._waiting >= self._max_waiting:
            line = self._waiting / self._slots + 1
            raise TooManySignUps(max(1, math.ceil(line * HASH_SECONDS)))
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._semaphore.release()


# While logins are under way, new passwords are hashed at this nice value: a tenth of a normal
# thread's CPU share where they compete, so a login's hash keeps ~90 % of it. Otherwise at the
# normal priority: at a low one all the time, sign-ups starved behind any busy neighbour.
NEW_PASSWORD_NICE = 10


def _lower_this_threads_priority() -> None:
    # Linux keeps a nice value per thread, and Argon2's own threads (p=4) inherit it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NEW_PASSWORD_NICE)


class HashingLanes:
    """A lane of its own, so that hashing new passwords (sign-ups, resets) never holds up logins.

    Logins check passwords at normal priority. New passwords get half as many slots as cores,
    with a short line (beyond it they are refused), and while logins are under way they are
    hashed by threads at a low CPU priority (a hash runs four Argon2 threads: one alone fills two
    cores): with 60 sign-ups at once, a login still gets the CPU it would get idle.
    """

    def __init__(self, cpus: int | None = None) -> None:
        cpus = cpus or _usable_cpus()
        new_slots = max(1, cpus // 2)
        self.new_password = Lane(new_slots, new_slots * NEW_PASSWORD_QUEUE_PER_SLOT)
        self._normal = ThreadPoolExecutor(new_slots, "argon2-new")
        self._yielding = ThreadPoolExecutor(
            new_slots, "argon2-new-low", initializer=_lower_this_threads_priority
        )
        self._logins = 0

    def close(self) -> None:
        for pool in (self._normal, self._yielding):
            pool.shutdown(wait=False, cancel_futures=True)

    async def hash_new(self, password: str) -> str:
        """Hash a new password; the caller holds a `new_password` slot."""
        pool = self._yielding if self._logins else self._normal
        return await asyncio.get_running_loop().run_in_executor(pool, _hasher.hash, password)

    @asynccontextmanager
    async def login(self) -> AsyncIterator[None]:
        """Around a whole login: new passwords hashed meanwhile yield the CPU to it."""
        self._logins += 1
        try:
            yield
        finally:
            self._logins -= 1
