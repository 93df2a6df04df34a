"""URL imports: fetch a job's source through the outbound guard into the blob store, then hand
the job to the converters with `job.submitted`, as an upload would.

The bytes are streamed, counted against MAX_UPLOAD_BYTES as they arrive and sniffed like an
upload's first bytes; a failure fails the job with `url_fetch_failed`, `url_forbidden`,
`file_too_large` or `not_media`, and nothing stays stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from aio_pika.abc import AbstractRobustConnection

from services.converter.retention import submitted_event
from shared.blobstore import BlobStore
from shared.errors import AppError, ErrorCode
from shared.events import (
    Event,
    JobFailed,
    JobFailedPayload,
    JobImportRequested,
    JobProgress,
    JobProgressPayload,
)
from shared.jobs import JobError, JobStatus
from shared.jobstore import JobStore
from shared.media.sniff import SNIFF_BYTES, sniff_container
from shared.messaging import Consumer, EventPublisher
from shared.outbound import FetchFailed, Guard
from shared.topology import Topology

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
# Live progress of a fetch at most this often.
PROGRESS_INTERVAL = 0.5
IMPORTS_AT_ONCE = 4


class ImportFailed(AppError):
    status_code = 422


@dataclass
class Importer:
    jobs: JobStore
    blobs: BlobStore
    publisher: EventPublisher
    guard: Guard
    max_bytes: int
    deadline: float

    async def handle(self, event: Event) -> None:
        if not isinstance(event, JobImportRequested):
            return
        payload = event.payload
        job = await self.jobs.get(payload.job_id)
        # A redelivery after the bytes were stored, or a job cancelled meanwhile: nothing to do.
        if job is None or job.status != JobStatus.QUEUED or job.source_blob_id is not None:
            return
        blob_id = f"{job.id}-src"
        try:
            size = await self.blobs.write(blob_id, self._fetch(event))
        except AppError as exc:
            await self._fail(event, exc, job.user_email_verified)
            return
        if not await self.jobs.set_imported_source(job.id, blob_id, size):
            await self.blobs.delete(blob_id)
            return
        stored = await self.jobs.get(job.id)
        if stored is not None and stored.source_blob_id is not None:
            await self.publisher.publish(submitted_event(stored, stored.source_blob_id))
        log.info("job %s imported: %d bytes", job.id, size)

    async def _fetch(self, event: JobImportRequested) -> AsyncIterator[bytes]:
        payload = event.payload
        async with self.guard.stream(
            "GET",
            payload.source_url,
            total_timeout=self.deadline,
            max_redirects=MAX_REDIRECTS,
            headers={"user-agent": "video2mp3-import", "accept": "*/*"},
        ) as response:
            if response.status_code != 200:
                raise FetchFailed(f"the server answered HTTP {response.status_code}")
            total = _declared_length(response)
            if total is not None and total > self.max_bytes:
                raise _too_large(self.max_bytes)
            received = 0
            head = b""
            last_report = 0.0
            async for chunk in _body(response):
                received += len(chunk)
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        _check_media(head)
                now = time.monotonic()
                if total and now - last_report >= PROGRESS_INTERVAL:
                    last_report = now
                    await self._progress(event, min(99, received * 100 // total))
                yield chunk
            if received == 0:
                raise ImportFailed("the URL gave an empty file", code=ErrorCode.EMPTY_FILE)
            if len(head) < SNIFF_BYTES:
                _check_media(head)
            await self._progress(event, 100)

    async def _progress(self, event: JobImportRequested, percent: int) -> None:
        ref = event.payload
        try:
            await self.publisher.publish(
                JobProgress(
                    correlation_id=event.correlation_id,
                    payload=JobProgressPayload(
                        job_id=ref.job_id, user_id=ref.user_id, progress=percent, stage="fetch"
                    ),
                )
            )
        except AppError:  # live-only: a lost progress event costs nothing
            log.debug("fetch progress of %s not sent", ref.job_id)

    async def _fail(self, event: JobImportRequested, exc: AppError, verified: bool) -> None:
        payload = event.payload
        log.info("import of job %s failed: %s %s", payload.job_id, exc.code, exc.detail)
        failed = JobFailed(
            correlation_id=event.correlation_id,
            payload=JobFailedPayload(
                job_id=payload.job_id,
                user_id=payload.user_id,
                user_email=payload.user_email,
                user_email_verified=verified,
                filename=payload.filename,
                code=exc.code,
                detail=exc.detail,
            ),
        )
        job = await self.jobs.fail(
            payload.job_id, JobError(code=exc.code, detail=exc.detail), failed
        )
        if job is None:
            return
        await self.publisher.publish(failed)
        await self.jobs.clear_outbox(payload.job_id, failed.event_id)


async def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        raise FetchFailed(f"the transfer broke off: {exc or type(exc).__name__}") from None


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or response.headers.get("content-encoding"):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _too_large(limit: int) -> ImportFailed:
    return ImportFailed(
        f"the file is larger than the limit of {limit} bytes", code=ErrorCode.FILE_TOO_LARGE
    )


def _check_media(head: bytes) -> None:
    if sniff_container(head) is None:
        raise ImportFailed("the URL did not give a video or audio file", code=ErrorCode.NOT_MEDIA)


async def consume_imports(
    connection: AbstractRobustConnection, topology: Topology, importer: Importer
) -> Consumer:
    return await Consumer.start(
        connection,
        topology,
        topology.imports_queue,
        importer.handle,
        (JobImportRequested,),
        prefetch=IMPORTS_AT_ONCE,
    )
