"""The lifecycle of stored data: expired outputs, kept sources, leftovers and stuck jobs."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.blobstore import BlobStore
from shared.errors import ErrorCode
from shared.events import JobSubmitted, JobSubmittedPayload
from shared.jobs import Job, utcnow
from shared.jobstore import JobStore
from shared.messaging import EventPublisher
from shared.settings import Settings

log = logging.getLogger(__name__)

FailJob = Callable[[Job, str, ErrorCode, str], Awaitable[None]]

# A blob younger than this may belong to an upload whose job is being written right now.
ORPHAN_GRACE = timedelta(hours=1)
# Blob ids are the job id, an attempt number for outputs, and the role of the bytes:
# `{job}-src`, `{job}-{attempt}-out` (`{job}-out` before attempts were named).
_BLOB_OWNER = re.compile(r"(?P<job>[^-]+)(?:-src|-[0-9]+-out|-out)")


@dataclass
class RetentionPolicy:
    source_days: float
    output_days: float
    stuck_hours: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            settings.source_retention_days,
            settings.output_retention_days,
            settings.stuck_job_hours,
        )

    def output_expiry(self, now: datetime) -> datetime:
        return now + timedelta(days=self.output_days)


def job_id_of(blob_id: str) -> str | None:
    match = _BLOB_OWNER.fullmatch(blob_id)
    return match["job"] if match else None


class RetentionSweeper:
    """One sweep removes what is past its time; each step is idempotent and safe to rerun."""

    def __init__(
        self, jobs: JobStore, blobs: BlobStore, policy: RetentionPolicy, fail_job: FailJob
    ) -> None:
        self.jobs = jobs
        self.blobs = blobs
        self.policy = policy
        self._fail_job = fail_job

    async def sweep(self, now: datetime | None = None) -> dict[str, int]:
        now = now or utcnow()
        done = {
            "expired_outputs": await self._expire_outputs(now),
            "old_sources": await self._drop_old_sources(now),
            "stuck_jobs": await self._fail_stuck(now),
            "orphans": await self._remove_orphans(now),
        }
        if any(done.values()):
            log.info("retention sweep: %s", done)
        return done

    async def _expire_outputs(self, now: datetime) -> int:
        jobs = await self.jobs.expired_outputs(now)
        for job in jobs:
            if job.output_blob_id:
                await self.blobs.delete(job.output_blob_id)
            await self.jobs.mark_output_expired(job.id)
        return len(jobs)

    async def _drop_old_sources(self, now: datetime) -> int:
        cutoff = now - timedelta(days=self.policy.source_days)
        jobs = await self.jobs.finished_with_source_before(cutoff)
        for job in jobs:
            if job.source_blob_id:
                await self.blobs.delete(job.source_blob_id)
            await self.jobs.drop_source(job.id)
        return len(jobs)

    async def _fail_stuck(self, now: datetime) -> int:
        jobs = await self.jobs.untouched_active_since(
            now - timedelta(hours=self.policy.stuck_hours)
        )
        for job in jobs:
            await self._fail_job(
                job,
                job.correlation_id or job.id,
                ErrorCode.TIMEOUT,
                "the conversion did not finish in time; please try again",
            )
        return len(jobs)

    async def _remove_orphans(self, now: datetime) -> int:
        """Blobs whose job no longer exists (a crash between storing and recording it)."""
        cutoff = now - ORPHAN_GRACE
        removed = await self.blobs.remove_leftovers(cutoff)
        candidates = [b async for b in self.blobs.list_blobs(cutoff)]
        for start in range(0, len(candidates), 200):
            batch = candidates[start : start + 200]
            owners = {b: job_id_of(b) for b in batch}
            alive = await self.jobs.existing_ids([j for j in owners.values() if j])
            for blob_id, job_id in owners.items():
                if job_id is not None and job_id not in alive:
                    await self.blobs.delete(blob_id)
                    removed += 1
        return removed


class Requeuer:
    """Publishes again the `job.submitted` of jobs queued `after` seconds past their last
    publish. Several converters may sweep at once: a compare-and-set on the publish time lets
    one of them publish; a copy that meets a job already claimed is dropped by `claim`."""

    def __init__(self, jobs: JobStore, publisher: EventPublisher, after: float) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.after = after

    @property
    def interval(self) -> float:
        return max(1.0, self.after / 4)

    async def sweep(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        published = 0
        for job in await self.jobs.unclaimed_since(now - timedelta(seconds=self.after)):
            if job.source_blob_id is None or not await self.jobs.mark_republished(job, now):
                continue
            # If this publish fails, the job's new publish time makes the next attempt wait a
            # full period: a broker that is down would drop it too.
            await self.publisher.publish(submitted_event(job, job.source_blob_id))
            published += 1
        if published:
            log.warning("re-published %d queued job(s) whose message was lost", published)
        return published


def submitted_event(job: Job, source_blob_id: str) -> JobSubmitted:
    return JobSubmitted(
        correlation_id=job.correlation_id or job.id,
        payload=JobSubmittedPayload.from_job(
            job, source_blob_id=source_blob_id, size=job.source.size, options=job.options
        ),
    )
