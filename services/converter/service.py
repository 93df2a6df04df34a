"""What the converter does with jobs: claim one and run it (`run.JobRun`), cancel it, fail it,
send the final events it recorded (the outbox), and settle dead letters.

No AMQP here beyond the publisher it is given; the worker module wires deliveries to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from services.converter.ffmpeg import timeout_for
from services.converter.retention import RetentionPolicy
from services.converter.run import JobRun
from shared.blobstore import BlobStore
from shared.errors import AppError, ErrorCode
from shared.events import (
    Event,
    JobCancelRequested,
    JobFailed,
    JobFailedPayload,
    JobSubmitted,
    event_adapter,
)
from shared.ffmpeg_path import ffmpeg_executable
from shared.jobs import Job, JobError, SourceInfo, utcnow
from shared.jobstore import JobStore
from shared.media import MediaPool
from shared.media.fit import Limits
from shared.messaging import DeadLetter, EventPublisher
from shared.metrics import JOBS_FINISHED
from shared.storage_space import ensure_work_space

log = logging.getLogger(__name__)

# A conversion still running after this is stopped as too long, before the broker's
# consumer_timeout (24 h in compose.yaml and the k8s overlay) would hand its message to a
# second converter while the first still works: FFmpeg takes minutes for a day of audio.


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Converter:
    jobs: JobStore
    blobs: BlobStore
    publisher: EventPublisher
    work_dir: Path
    libav: MediaPool
    ffmpeg: str = field(default_factory=ffmpeg_executable)
    timeout_base: float = 60.0
    timeout_factor: float = 2.0
    retention: RetentionPolicy = field(
        default_factory=lambda: RetentionPolicy(source_days=0, output_days=7, stuck_hours=24)
    )
    limits: Limits = field(default_factory=Limits)
    min_free_bytes: int = 0
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _cancelled: set[str] = field(default_factory=set)

    async def convert(self, event: JobSubmitted) -> None:
        """A job message: claim the job and run it, unless it is not pending any more."""
        job_id = event.payload.job_id
        # Short of space, the job is held unclaimed (an outage to the delivery loop), not failed.
        await ensure_work_space(self.blobs, self.work_dir, self.min_free_bytes)
        job = await self.jobs.claim(job_id, event.event_id)
        if job is None:
            # Missing, finished or cancelled: a redelivery or a late message, nothing to redo,
            # except an outcome whose event was never published.
            existing = await self.jobs.get(job_id)
            if existing is None:
                raise DeadLetter(f"job {job_id} does not exist")
            await self.flush_outbox(existing)
            log.info("job %s is not pending; skipped", job_id)
            return
        # A task of its own, so that a cancel request stops the job and not the delivery.
        task = asyncio.create_task(JobRun(self, job, event.correlation_id).run())
        self._running[job_id] = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if job_id not in self._cancelled:
                # Our own consumer is being cancelled (shutdown): stop the work, hand it back.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise
            JOBS_FINISHED.labels("cancelled").inc()
            await self.send_recorded_outcome(job_id)
        finally:
            self._running.pop(job_id, None)
            self._cancelled.discard(job_id)

    async def handle_control(self, event: JobCancelRequested) -> None:
        """A message on this converter's private control queue."""
        self.request_cancel(event.payload.job_id)

    def request_cancel(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is not None and not task.done():
            self._cancelled.add(job_id)
            task.cancel()

    def timeout_for(self, duration: float | None, passes: int = 1) -> float:
        return timeout_for(duration, passes, base=self.timeout_base, factor=self.timeout_factor)

    async def announce(self, event: Event) -> None:
        """Publish a live-only event (started, progress): losing one must not stop the work."""
        try:
            await self.publisher.publish(event)
        except AppError as exc:
            log.warning("%s for %s not published: %s", event.type, event.payload.job_id, exc)

    async def fail(
        self,
        job: Job,
        correlation_id: str,
        code: ErrorCode,
        detail: str,
        source: SourceInfo | None = None,
    ) -> None:
        """Record the failure and its event together, then publish the event."""
        failed = JobFailed(
            correlation_id=correlation_id,
            payload=JobFailedPayload.from_job(job, code=code, detail=detail),
        )
        error = JobError(code=code, detail=detail)
        if await self.jobs.fail(job.id, error, outbox=failed, source=source) is None:
            return
        log.info("job %s failed: %s (%s)", job.id, detail, code)
        JOBS_FINISHED.labels("failed").inc()
        await self.publish_outbox(job.id, failed)

    async def send_recorded_outcome(self, job_id: str) -> None:
        """Send the final event recorded in the job's outbox by someone else (the gateway's
        cancel), now that our work on it has stopped. Without one it went out already (the
        sweep, a DELETE that removed the job)."""
        current = await self.jobs.get(job_id)
        if current is not None:
            await self.flush_outbox(current)

    async def publish_outbox(self, job_id: str, event: Event) -> None:
        await self.publisher.publish(event)
        await self.jobs.clear_outbox(job_id, event.event_id)

    async def flush_outbox(self, job: Job) -> None:
        """Publish a final event that was recorded but, by a crash or outage, never sent."""
        if job.outbox:
            await self.publish_outbox(job.id, event_adapter.validate_python(job.outbox))

    async def sweep_outbox(self, older_than: float = 30.0) -> int:
        """Re-publish final events left unsent for `older_than` seconds."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        jobs = await self.jobs.with_pending_outbox(cutoff)
        for job in jobs:
            await self.flush_outbox(job)
        return len(jobs)

    async def handle_dead_letter(self, event: Event) -> None:
        """A job message that exceeded the delivery limit: its job ends failed, owner told."""
        if not isinstance(event, JobSubmitted):
            log.error("dead-lettered %s %s", event.type, event.event_id)
            return
        job = await self.jobs.get(event.payload.job_id)
        if job is None:
            return  # a message for a job that never existed: parked in the dead letters
        if job.status.is_final:
            await self.flush_outbox(job)
            return
        await self.fail(
            job,
            event.correlation_id,
            ErrorCode.INTERNAL_ERROR,
            "the conversion kept failing on our side; please try again later",
        )

    @property
    def running(self) -> int:
        return len(self._running)

    async def wait_idle(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the running conversions to end."""
        tasks = [t for t in self._running.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def cancel_all(self) -> None:
        """Stop every running conversion (shutdown): their messages go back to the queue."""
        for task in self._running.values():
            task.cancel()

    def remove_stale_temp(self) -> None:
        """Remove temp dirs of converters on this host that died without cleaning up (kill -9).

        Blocking; called once at start-up, before any job runs.
        """
        if not self.work_dir.is_dir():
            return
        for entry in self.work_dir.iterdir():
            pid = entry.name.removeprefix("pid-")
            if entry.name.startswith("pid-") and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
