"""What the converter does with one job: claim it, probe, run FFmpeg, store, report.

No AMQP here beyond the publisher it is given; the worker module wires deliveries to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePath

from services.converter.pipeline import convert
from services.converter.progress import ProgressThrottle, percent
from services.converter.retention import RetentionPolicy
from services.converter.source import StoredSource
from shared.blobstore import BlobStore
from shared.errors import AppError, ErrorCode, MediaError
from shared.events import (
    Event,
    JobCancelRequested,
    JobCompleted,
    JobCompletedPayload,
    JobFailed,
    JobFailedPayload,
    JobProgress,
    JobProgressPayload,
    JobRef,
    JobStarted,
    JobSubmitted,
    event_adapter,
)
from shared.ffmpeg_path import ffmpeg_executable
from shared.jobs import Job, JobError, OutputInfo, SourceInfo, utcnow
from shared.jobstore import JobStore
from shared.media import MediaInfo, MediaPool
from shared.media.fit import Limits
from shared.messaging import DeadLetter, EventPublisher
from shared.metrics import (
    CONVERSION_SECONDS,
    CONVERSION_SPEED,
    FFMPEG_FAILURES,
    JOBS_FINISHED,
)
from shared.options import ConversionOptions, InvalidOptions
from shared.storage_space import ensure_work_space

log = logging.getLogger(__name__)

# The job document's progress is written less often than events are sent: readers of
# GET /v1/jobs/{id} need to agree with the stream, not to follow it frame by frame. The
# source's description waits as long: a shorter job's outcome carries it, one write less.
DB_PROGRESS_INTERVAL = 1.0
# A conversion still running after this is stopped as too long, before the broker's
# consumer_timeout (24 h in compose.yaml and the k8s overlay) would hand its message to a
# second converter while the first still works: FFmpeg takes minutes for a day of audio.
MAX_CONVERSION_SECONDS = 20 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_filename(source_name: str, extension: str = "mp3") -> str:
    stem = PurePath(source_name).stem or "audio"
    return f"{stem}.{extension}"


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

    @property
    def running(self) -> int:
        return len(self._running)

    async def wait_idle(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the running conversions to end."""
        tasks = [t for t in self._running.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def handle(self, event: Event) -> None:
        """Entry point for deliveries from the job queue."""
        if isinstance(event, JobSubmitted):
            await self.convert(event)
        else:
            log.warning("converter ignores %s on the job queue", event.type)

    async def handle_control(self, event: Event) -> None:
        """Entry point for this converter's private control queue."""
        if isinstance(event, JobCancelRequested):
            self.request_cancel(event.payload.job_id)

    def request_cancel(self, job_id: str) -> None:
        task = self._running.get(job_id)
        if task is not None and not task.done():
            self._cancelled.add(job_id)
            task.cancel()

    async def convert(self, event: JobSubmitted) -> None:
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
        task = asyncio.create_task(self._convert(job, event.correlation_id))
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
            await self._send_recorded_outcome(job_id)
        finally:
            self._running.pop(job_id, None)
            self._cancelled.discard(job_id)

    async def _convert(self, job: Job, correlation_id: str) -> None:
        ref = JobRef(job_id=job.id, user_id=job.user_id)
        # Published while the temp dir is made and the source probed, not before: awaited
        # before the first progress event and before any outcome, so it still comes first.
        announced = asyncio.ensure_future(
            self._announce(JobStarted(correlation_id=correlation_id, payload=ref))
        )
        announced.add_done_callback(_log_failure)
        try:
            await self._convert_announced(job, ref, correlation_id, announced)
        finally:
            if not announced.done():
                announced.cancel()

    async def _convert_announced(
        self, job: Job, ref: JobRef, correlation_id: str, announced: asyncio.Future[None]
    ) -> None:
        workdir = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix=f"{job.id}-", dir=self._tmp_root())
        )
        started = time.monotonic()
        output_id = self.output_blob_id(job)
        unwritten = _Unwritten()
        recorded = False
        try:
            try:
                output = await self._produce(
                    job, workdir, correlation_id, announced, output_id, unwritten
                )
            except MediaError as exc:
                FFMPEG_FAILURES.labels(str(exc.code)).inc()
                await announced
                await self.fail(job, correlation_id, exc.code, exc.detail, unwritten.source)
                return
            elapsed = time.monotonic() - started
            CONVERSION_SECONDS.observe(elapsed)
            if output.duration and elapsed > 0:
                CONVERSION_SPEED.observe(output.duration / elapsed)
            completed = JobCompleted(
                correlation_id=correlation_id,
                payload=JobCompletedPayload(
                    job_id=job.id,
                    user_id=job.user_id,
                    user_email=job.user_email,
                    user_email_verified=job.user_email_verified,
                    filename=job.filename,
                    output_filename=output.filename,
                    size=output.size,
                    duration=output.duration,
                    bitrate=output.bitrate,
                ),
            )
            stored = await self.jobs.complete(
                job.id,
                output,
                output_id,
                outbox=completed,
                expires_at=self.retention.output_expiry(utcnow()),
                source=unwritten.source,
            )
            if stored is None:
                # Cancelled, deleted, or finished by another attempt while we worked: a cancel
                # that came too late to stop us is announced now, not by the sweep.
                await self._send_recorded_outcome(job.id)
                return
            recorded = True
            await self._announce(
                JobProgress(
                    correlation_id=correlation_id,
                    payload=JobProgressPayload(**ref.model_dump(), progress=100),
                )
            )
            JOBS_FINISHED.labels("completed").inc()
            await self.publisher.publish(completed)
            # After the news, not before: removing a large GridFS source takes a while and the
            # user waits for nothing of it. Forgotten in the write that marks the event sent;
            # a crash in between leaves both to the outbox and retention sweeps.
            spent = job.source_blob_id if self.retention.source_days == 0 else None
            if spent and not await self._removed(spent):
                spent = None  # still named by the job: the retention sweep tries again
            await self.jobs.clear_outbox(job.id, completed.event_id, drop_source=bool(spent))
        finally:
            if not recorded:
                # Whatever stopped us (a cancel, an error, a job no longer ours), an output no
                # job names must not stay behind. It is this attempt's own: never the one
                # another attempt recorded.
                await self._discard_output(output_id)
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _removed(self, blob_id: str) -> bool:
        try:
            await self.blobs.delete(blob_id)
        except Exception as exc:  # the job is done; its event must still be marked sent
            log.warning("could not remove the spent source %s: %r", blob_id, exc)
            return False
        return True

    async def _discard_output(self, blob_id: str) -> None:
        try:
            await asyncio.shield(self.blobs.delete(blob_id))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the orphan sweep removes it later
            log.warning("could not remove the unused output %s: %r", blob_id, exc)

    def _tmp_root(self) -> Path:
        root = self.work_dir / f"pid-{os.getpid()}"
        root.mkdir(parents=True, exist_ok=True)
        return root

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

    def timeout_for(self, duration: float | None, passes: int = 1) -> float:
        """The conversion's time limit, scaled with the source (unknown duration: one hour)
        and its passes, at most MAX_CONVERSION_SECONDS."""
        if duration is None:
            limit = max(self.timeout_base, 3600.0)
        else:
            limit = self.timeout_base + self.timeout_factor * duration
        return min(limit * passes, MAX_CONVERSION_SECONDS)

    @staticmethod
    def output_blob_id(job: Job) -> str:
        # One per attempt: two attempts of a job (a redelivery while the first still runs) never
        # write, or remove, each other's output.
        return f"{job.id}-{job.attempts}-out"

    async def _source(self, job: Job) -> tuple[Path | StoredSource, MediaInfo]:
        """The stored source itself when it is on local disk (no copy), else a handle that
        `convert` pipes into FFmpeg or copies; probed either way."""
        assert job.source_blob_id is not None
        local = self.blobs.local_path(job.source_blob_id)
        if local is not None:
            return local, await self.libav.probe(local)
        # The gateway recorded the size it stored: no round trip to the store for it.
        stored = StoredSource(self.blobs, job.source_blob_id, job.source.size)
        return stored, await stored.probe(self.libav)

    async def _produce(
        self,
        job: Job,
        workdir: Path,
        correlation_id: str,
        announced: asyncio.Future[None],
        output_id: str,
        unwritten: _Unwritten,
    ) -> OutputInfo:
        if not job.source_blob_id:
            raise MediaError("the job has no source file", code=ErrorCode.UNREADABLE_MEDIA)
        try:
            options = ConversionOptions.parse(job.options)
        except InvalidOptions as exc:
            raise MediaError(exc.detail, code=exc.code) from None
        source, info = await self._source(job)
        unwritten.source = info.to_source_info(job.source.size)
        # Written while FFmpeg runs, once it has run DB_PROGRESS_INTERVAL; else the outcome
        # carries it. Settled before the output is stored, so a failed write sends the job back
        # before it leaves an output behind; and before a failure is recorded, so a failed job
        # keeps its source's description too.
        recorded = asyncio.ensure_future(self._write_source_later(job.id, unwritten))
        recorded.add_done_callback(_log_failure)
        try:
            await announced
            if not info.audio_tracks:
                raise MediaError("the file has no audio track", code=ErrorCode.NO_AUDIO_STREAM)
            result = await convert(
                source,
                workdir,
                info,
                options,
                libav=self.libav,
                ffmpeg=self.ffmpeg,
                filename=job.filename,
                on_progress=self._progress_reporter(job, correlation_id),
                timeout=self.timeout_for(info.duration, 2 if options.normalize else 1),
                limits=self.limits,
            )
            await _settle(recorded, unwritten)
        except asyncio.CancelledError:
            recorded.cancel()  # a cancel is not held up by a slow database
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await _settle(recorded, unwritten)
            raise
        size = await self.blobs.write_file(output_id, result.output)
        output = result.to_output_info(size, output_filename(job.filename, result.extension))
        return output.model_copy(
            update={"path": result.path, "track": result.track, "cover": result.cover}
        )

    async def _write_source_later(self, job_id: str, unwritten: _Unwritten) -> None:
        await asyncio.sleep(DB_PROGRESS_INTERVAL)
        source, unwritten.source = unwritten.source, None
        if source is not None:
            await self.jobs.set_source(job_id, source)

    def _progress_reporter(
        self, job: Job, correlation_id: str
    ) -> Callable[[float], Awaitable[None]]:
        throttle = ProgressThrottle()
        # Counted from the start: a job shorter than the interval never writes its progress
        # (its completion does), and FFmpeg's last report is not held up by a database write
        # just before `complete` writes again (~3 ms on every short job).
        last_db_write = time.monotonic()

        async def report(fraction_done: float) -> None:
            nonlocal last_db_write
            value = percent(fraction_done, 1.0)
            now = time.monotonic()
            if not throttle.should_emit(value, now):
                return
            await self._announce(
                JobProgress(
                    correlation_id=correlation_id,
                    payload=JobProgressPayload(job_id=job.id, user_id=job.user_id, progress=value),
                )
            )
            if now - last_db_write >= DB_PROGRESS_INTERVAL:
                last_db_write = now
                await self.jobs.set_progress(job.id, value)

        return report

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
            payload=JobFailedPayload(
                job_id=job.id,
                user_id=job.user_id,
                user_email=job.user_email,
                user_email_verified=job.user_email_verified,
                filename=job.filename,
                code=code,
                detail=detail,
            ),
        )
        error = JobError(code=code, detail=detail)
        if await self.jobs.fail(job.id, error, outbox=failed, source=source) is None:
            return
        log.info("job %s failed: %s (%s)", job.id, detail, code)
        JOBS_FINISHED.labels("failed").inc()
        await self.publish_outbox(job.id, failed)

    async def _send_recorded_outcome(self, job_id: str) -> None:
        """Send the final event recorded in the job's outbox by someone else (the gateway's
        cancel), now that our work on it has stopped. Without one it went out already (the
        sweep, a DELETE that removed the job)."""
        current = await self.jobs.get(job_id)
        if current is not None:
            await self.flush_outbox(current)

    async def _announce(self, event: Event) -> None:
        """Publish a live-only event (started, progress): losing one must not stop the work."""
        try:
            await self.publisher.publish(event)
        except AppError as exc:
            log.warning("%s for %s not published: %s", event.type, event.payload.job_id, exc)

    async def publish_outbox(self, job_id: str, event: Event) -> None:
        await self.publisher.publish(event)
        await self.jobs.clear_outbox(job_id, event.event_id)

    async def flush_outbox(self, job: Job) -> None:
        """Publish a final event that was recorded but, by a crash or outage, never sent."""
        if job.outbox:
            await self.publish_outbox(job.id, event_adapter.validate_python(job.outbox))

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

    async def sweep_outbox(self, older_than: float = 30.0) -> int:
        """Re-publish final events left unsent for `older_than` seconds."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        jobs = await self.jobs.with_pending_outbox(cutoff)
        for job in jobs:
            await self.flush_outbox(job)
        return len(jobs)

    def cancel_all(self) -> None:
        """Stop every running conversion (shutdown): their messages go back to the queue."""
        for task in self._running.values():
            task.cancel()


@dataclass
class _Unwritten:
    """The source's description while no write has stored it: the outcome's write takes it."""

    source: SourceInfo | None = None


async def _settle(recorded: asyncio.Future[None], unwritten: _Unwritten) -> None:
    """Stop the source's write if it is still waiting to start (the outcome will carry the
    description); else wait for it, raising what it raised."""
    if unwritten.source is not None:
        recorded.cancel()
        await asyncio.gather(recorded, return_exceptions=True)
        return
    await recorded


def _log_failure(task: asyncio.Future[None]) -> None:
    """Where the job's own error wins over a background step's, the step's is still logged."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.warning("a background step of a job failed: %r", error)
