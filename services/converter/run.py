"""One attempt at one claimed job, its steps in the order they run: announce, fetch, convert,
store, finish (or fail), clean up.

`Converter` (service.py) claims the job and runs a `JobRun` in a task it can cancel; the
media work itself is `pipeline.convert`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from services.converter.pipeline import ConversionResult, convert
from services.converter.progress import ProgressThrottle, percent
from services.converter.source import StoredSource
from shared.aio import shielded
from shared.errors import ErrorCode, MediaError
from shared.events import (
    JobCompleted,
    JobCompletedPayload,
    JobProgress,
    JobProgressPayload,
    JobRef,
    JobStarted,
)
from shared.jobs import Job, OutputInfo, utcnow
from shared.media import MediaInfo
from shared.metrics import CONVERSION_SECONDS, CONVERSION_SPEED, FFMPEG_FAILURES, JOBS_FINISHED
from shared.options import ConversionOptions, InvalidOptions

if TYPE_CHECKING:
    from services.converter.service import Converter

log = logging.getLogger(__name__)

# The job document's progress is written less often than events are sent: readers of
# GET /v1/jobs/{id} need to agree with the stream, not to follow it frame by frame.
DB_PROGRESS_INTERVAL = 1.0

Source = Path | StoredSource


def output_filename(source_name: str, extension: str = "mp3") -> str:
    stem = PurePath(source_name).stem or "audio"
    return f"{stem}.{extension}"


class JobRun:
    def __init__(self, converter: Converter, job: Job, correlation_id: str) -> None:
        self.converter = converter
        self.job = job
        self.correlation_id = correlation_id
        # One per attempt: two attempts of a job (a redelivery while the first still runs)
        # never write, or remove, each other's output.
        self.output_id = f"{job.id}-{job.attempts}-out"
        self.recorded = False
        """The outcome is in the job document: the output is the job's, not ours to remove."""

    async def run(self) -> None:
        await self.announce()
        workdir = await self.make_workdir()
        started = time.monotonic()
        try:
            try:
                source, info, options = await self.fetch()
                result = await self.convert(source, info, options, workdir)
                output = await self.store(result)
            except MediaError as exc:
                await self.fail(exc)
                return
            await self.finish(output, time.monotonic() - started)
        finally:
            await self.clean_up(workdir)

    async def announce(self) -> None:
        await self.converter.announce(
            JobStarted(correlation_id=self.correlation_id, payload=JobRef.from_job(self.job))
        )

    async def make_workdir(self) -> Path:
        root = self.converter.work_dir / f"pid-{os.getpid()}"

        def make() -> str:
            root.mkdir(parents=True, exist_ok=True)
            return tempfile.mkdtemp(prefix=f"{self.job.id}-", dir=root)

        return Path(await asyncio.to_thread(make))

    async def fetch(self) -> tuple[Source, MediaInfo, ConversionOptions]:
        """The source (the stored file itself when it is on local disk, else a handle that
        `convert` pipes into FFmpeg or copies), what it holds, and the options; the job
        document gets the source's description."""
        job, blobs, libav = self.job, self.converter.blobs, self.converter.libav
        if not job.source_blob_id:
            raise MediaError("the job has no source file", code=ErrorCode.UNREADABLE_MEDIA)
        try:
            options = ConversionOptions.parse(job.options)
        except InvalidOptions as exc:
            raise MediaError(exc.detail, code=exc.code) from None
        source: Source
        local = blobs.local_path(job.source_blob_id)
        if local is not None:
            source, info = local, await libav.probe(local)
        else:
            # The gateway recorded the size it stored: no round trip to the store for it.
            source = StoredSource(blobs, job.source_blob_id, job.source.size)
            info = await source.probe(libav)
        await self.converter.jobs.set_source(job.id, info.to_source_info(job.source.size))
        if not info.audio_tracks:
            raise MediaError("the file has no audio track", code=ErrorCode.NO_AUDIO_STREAM)
        return source, info, options

    async def convert(
        self, source: Source, info: MediaInfo, options: ConversionOptions, workdir: Path
    ) -> ConversionResult:
        converter = self.converter
        return await convert(
            source,
            workdir,
            info,
            options,
            libav=converter.libav,
            ffmpeg=converter.ffmpeg,
            filename=self.job.filename,
            on_progress=self.progress_reporter(),
            timeout=converter.timeout_for(info.duration, 2 if options.normalize else 1),
            limits=converter.limits,
        )

    def progress_reporter(self) -> Callable[[float], Awaitable[None]]:
        """Progress events as FFmpeg reports, throttled; the job document once a second."""
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
            await self.announce_progress(value)
            if now - last_db_write >= DB_PROGRESS_INTERVAL:
                last_db_write = now
                await self.converter.jobs.set_progress(self.job.id, value)

        return report

    async def announce_progress(self, value: int) -> None:
        await self.converter.announce(
            JobProgress(
                correlation_id=self.correlation_id,
                payload=JobProgressPayload.from_job(self.job, progress=value),
            )
        )

    async def store(self, result: ConversionResult) -> OutputInfo:
        size = await self.converter.blobs.write_file(self.output_id, result.output)
        output = result.to_output_info(size, output_filename(self.job.filename, result.extension))
        return output.model_copy(
            update={"path": result.path, "track": result.track, "cover": result.cover}
        )

    async def finish(self, output: OutputInfo, elapsed: float) -> None:
        """Record the output and job.completed together, then tell everyone."""
        converter, job = self.converter, self.job
        CONVERSION_SECONDS.observe(elapsed)
        if output.duration and elapsed > 0:
            CONVERSION_SPEED.observe(output.duration / elapsed)
        completed = JobCompleted(
            correlation_id=self.correlation_id,
            payload=JobCompletedPayload.from_job(
                job,
                output_filename=output.filename,
                size=output.size,
                duration=output.duration,
                bitrate=output.bitrate,
            ),
        )
        stored = await converter.jobs.complete(
            job.id,
            output,
            self.output_id,
            outbox=completed,
            expires_at=converter.retention.output_expiry(utcnow()),
        )
        if stored is None:
            # Cancelled, deleted, or finished by another attempt while we worked: a cancel
            # that came too late to stop us is announced now, not by the sweep.
            await converter.send_recorded_outcome(job.id)
            return
        self.recorded = True
        await self.announce_progress(100)
        JOBS_FINISHED.labels("completed").inc()
        await converter.publisher.publish(completed)
        # After the news, not before: removing a large GridFS source takes a while and the
        # user waits for nothing of it. Forgotten in the write that marks the event sent; a
        # crash in between leaves both to the outbox and retention sweeps.
        spent = job.source_blob_id if converter.retention.source_days == 0 else None
        if spent and not await self._removed(spent):
            spent = None  # still named by the job: the retention sweep tries again
        await converter.jobs.clear_outbox(job.id, completed.event_id, drop_source=bool(spent))

    async def fail(self, error: MediaError) -> None:
        FFMPEG_FAILURES.labels(str(error.code)).inc()
        await self.converter.fail(self.job, self.correlation_id, error.code, error.detail)

    async def clean_up(self, workdir: Path) -> None:
        """Whatever stopped us (a cancel, an error, a job no longer ours), an output no job
        names must not stay behind. It is this attempt's own: never one another attempt
        recorded."""
        if not self.recorded:
            try:
                await shielded(
                    self.converter.blobs.delete(self.output_id), "removing an unused output"
                )
            except Exception as exc:  # the orphan sweep removes it later
                log.warning("could not remove the unused output %s: %r", self.output_id, exc)
        await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _removed(self, blob_id: str) -> bool:
        try:
            await self.converter.blobs.delete(blob_id)
        except Exception as exc:  # the job is done; its event must still be marked sent
            log.warning("could not remove the spent source %s: %r", blob_id, exc)
            return False
        return True
