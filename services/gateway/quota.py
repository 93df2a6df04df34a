"""Per-account quotas: active jobs, stored bytes, jobs per day and uploads in flight.

Every way of making a job (multipart upload, tus, URL import) goes through `admit_job`, which
checks the limits and takes a hold for the upload under way. Admissions of one user take turns
in a gateway (a lock per user) and are serialised across gateway processes by a compare-and-set
on the user's counter document: each admission counts the holds and jobs already there, adds its
own hold, then bumps the version it read; if another admission bumped it first, its hold goes
and it counts again. Counts that no limit needs are not read. So parallel
uploads cannot pass the active-jobs or daily limit at all; the storage limit holds to within
one upload sent without a length (chunked), whose size is only known at its end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel

from services.gateway.state import GatewayState
from shared.accounts import AccountLimits, effective_limit
from shared.aio import shielded
from shared.errors import ErrorCode, LimitReached, Unavailable
from shared.jobs import utcnow

log = logging.getLogger(__name__)

# Admissions of one user racing each other retry this often before giving up with a 503.
ADMIT_ATTEMPTS = 40
# A hold outlives its upload's deadline by this much, so it never lapses while the upload runs.
HOLD_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class Limits:
    """One account's limits; 0 means unlimited."""

    max_active_jobs: int
    storage_bytes: int
    jobs_per_day: int


class Usage(BaseModel):
    """`GET /v1/usage`: what the account uses and may use (a limit of 0 is unlimited)."""

    storage_bytes: int
    storage_limit: int
    active_jobs: int
    active_jobs_limit: int
    jobs_today: int
    jobs_per_day_limit: int


async def limits_for(state: GatewayState, user_id: str) -> Limits:
    """The account's limits: an admin's values where set, else the installation's."""
    settings = state.settings
    try:
        account = await state.accounts.get(user_id)
    except Unavailable:
        # Auth being out should not stop uploads that tokens still allow: the defaults apply.
        log.warning("limits of %s unknown (auth unavailable); the defaults apply", user_id)
        account = None
    own = account.limits if account is not None else AccountLimits()
    return Limits(
        max_active_jobs=effective_limit(own.max_active_jobs, settings.user_max_active_jobs),
        storage_bytes=effective_limit(own.storage_bytes, settings.user_storage_bytes),
        jobs_per_day=effective_limit(own.jobs_per_day, settings.user_jobs_per_day),
    )


def _today(now: datetime) -> str:
    return now.date().isoformat()


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


async def usage_of(state: GatewayState, user_id: str) -> Usage:
    limits = await limits_for(state, user_id)
    store = state.quotas
    now = utcnow()
    counter = await store.counter(user_id)
    return Usage(
        storage_bytes=await store.stored_bytes(user_id),
        storage_limit=limits.storage_bytes,
        active_jobs=await store.active_jobs(user_id),
        active_jobs_limit=limits.max_active_jobs,
        jobs_today=int(counter["jobs"]) if counter["day"] == _today(now) else 0,
        jobs_per_day_limit=limits.jobs_per_day,
    )


@asynccontextmanager
async def admit_job(state: GatewayState, user_id: str, size: int | None) -> AsyncIterator[None]:
    """Admit one new job of `size` bytes (None: not known yet) or raise the limit it would pass.

    The block stores the upload and records the job; while it runs the upload counts as an
    active job of `size` bytes. A block that raises gives the day's count back.
    """
    limits = await limits_for(state, user_id)
    hold_id = uuid.uuid4().hex
    # Forty parallel uploads racing in one gateway cost forty rounds of compare-and-set.
    async with state.admissions.hold(user_id):
        day = await _admit(state, user_id, limits, size, hold_id)
    store = state.quotas
    try:
        yield
    except BaseException:
        await shielded(store.refund(user_id, day), "giving a job back to the day's count")
        raise
    finally:
        await shielded(store.release(hold_id), "releasing an upload's hold")


async def _admit(
    state: GatewayState, user_id: str, limits: Limits, size: int | None, hold_id: str
) -> str:
    """Take the hold and count the job; the day it was counted on."""
    store = state.quotas
    max_uploads = state.settings.user_max_uploads
    counts_holds = bool(max_uploads or limits.max_active_jobs or limits.storage_bytes)
    deadline = state.settings.upload_deadline_seconds
    for attempt in range(ADMIT_ATTEMPTS):
        now = utcnow()
        day = _today(now)
        counter = await store.counter(user_id)
        same_day = counter["day"] == day
        jobs_today = int(counter["jobs"]) if same_day else 0
        if limits.jobs_per_day and jobs_today >= limits.jobs_per_day:
            raise LimitReached(
                f"you have started {jobs_today} jobs today, the daily limit",
                code=ErrorCode.DAILY_LIMIT,
                status_code=429,
                retry_after=_seconds_to_midnight(now),
            )
        in_flight, held_bytes = await store.holds(user_id, now) if counts_holds else (0, 0)
        if max_uploads and in_flight >= max_uploads:
            raise LimitReached(
                f"you have {in_flight} uploads in progress; wait for one to finish",
                code=ErrorCode.TOO_MANY_UPLOADS,
                status_code=429,
                retry_after=5,
            )
        if limits.max_active_jobs:
            active = await store.active_jobs(user_id) + in_flight
            if active >= limits.max_active_jobs:
                raise LimitReached(
                    f"you have {active} jobs queued or running, the limit is "
                    f"{limits.max_active_jobs}; wait for one to finish",
                    code=ErrorCode.TOO_MANY_ACTIVE_JOBS,
                    status_code=429,
                    retry_after=30,
                )
        if limits.storage_bytes:
            stored = await store.stored_bytes(user_id) + held_bytes
            if stored + (size or 0) > limits.storage_bytes or stored >= limits.storage_bytes:
                raise LimitReached(
                    f"your files take {stored} bytes of your {limits.storage_bytes}; "
                    "delete some jobs first",
                    code=ErrorCode.STORAGE_QUOTA_EXCEEDED,
                    status_code=403,
                )
        expires_at = now + timedelta(seconds=deadline) + HOLD_SLACK
        await store.add_hold(hold_id, user_id, size or 0, expires_at)
        if await store.admit(user_id, int(counter["version"]), day, same_day):
            return day
        await store.release(hold_id)
        await asyncio.sleep(0.001 * secrets.randbelow(min(100, 5 * 2**attempt) + 1))
    raise Unavailable("too many uploads of this account at once; try again")
