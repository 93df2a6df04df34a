"""What the gateway does with jobs, free of HTTP: submit, cancel, delete."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import PurePath

from services.gateway.precheck import check_against_source
from services.gateway.quota import admit_job
from services.gateway.state import GatewayState
from services.gateway.uploads import MultipartUpload
from shared.errors import AppError, UploadTimeout
from shared.events import (
    Event,
    JobCancelled,
    JobCancelRequested,
    JobRef,
    JobSubmitted,
    JobSubmittedPayload,
    event_adapter,
)
from shared.jobs import Job, JobStatus, SourceInfo
from shared.metrics import UPLOAD_BYTES
from shared.options import ConversionOptions
from shared.storage_space import ensure_upload_space
from shared.tokens import Claims

log = logging.getLogger(__name__)

MAX_FILENAME = 200


def clean_filename(name: str | None) -> str:
    """The base name a client sent, without directories or control characters."""
    base = PurePath((name or "").replace("\\", "/")).name
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return base[:MAX_FILENAME] or "upload"


async def submit_job(
    state: GatewayState,
    user: Claims,
    upload: MultipartUpload,
    correlation_id: str,
) -> Job:
    """Store the upload, record the job, then announce it; on any failure leave nothing behind.
    The account's quotas are checked before a byte is read."""
    async with admit_job(state, user.user_id, upload.declared_bytes):
        return await _submit(state, user, upload, correlation_id)


async def _submit(
    state: GatewayState, user: Claims, upload: MultipartUpload, correlation_id: str
) -> Job:
    job_id = uuid.uuid4().hex
    blob_id = f"{job_id}-src"
    await ensure_upload_space(
        state.blobs, state.settings.min_free_bytes, upload.declared_bytes or 0
    )
    try:
        async with asyncio.timeout(state.settings.upload_deadline_seconds):
            size = await state.blobs.write(blob_id, upload.file_chunks())
    except TimeoutError:
        raise UploadTimeout(
            f"the upload took longer than {state.settings.upload_deadline_seconds:g} seconds"
        ) from None
    UPLOAD_BYTES.inc(size)
    # Only now are the file name and every form field known: fields may follow the file.
    filename = clean_filename(upload.filename)
    try:
        parsed = ConversionOptions.from_form(upload.fields)
        await check_against_source(
            state.libav, state.blobs, blob_id, size, parsed, state.settings.max_source_seconds
        )
    except BaseException:
        await state.blobs.delete(blob_id)
        raise
    options = parsed.normalized()
    job = Job(
        id=job_id,
        user_id=user.user_id,
        user_email=user.email,
        user_email_verified=user.email_verified,
        filename=filename,
        options=options,
        source_blob_id=blob_id,
        source=SourceInfo(size=size),
        correlation_id=correlation_id,
    )
    try:
        await state.jobs.insert(job)
        await state.publisher.publish(
            JobSubmitted(
                correlation_id=correlation_id,
                payload=JobSubmittedPayload.from_job(
                    job, source_blob_id=blob_id, size=size, options=options
                ),
            )
        )
    except BaseException:
        await _discard(state, job_id, blob_id)
        raise
    log.info("job %s submitted: %d bytes, %s", job_id, size, upload.container)
    return job


async def _discard(state: GatewayState, job_id: str, blob_id: str) -> None:
    try:
        await state.jobs.delete(job_id)
    finally:
        await state.blobs.delete(blob_id)


async def cancel_or_delete(state: GatewayState, user: Claims, job_id: str) -> None:
    """A running or queued job is cancelled (and kept, reading `cancelled`); a finished one is
    deleted. Either way its files go."""
    job = await state.jobs.get_owned(job_id, user.user_id)
    ref = JobRef.from_job(job)
    correlation_id = job.correlation_id or job_id
    if job.status == JobStatus.QUEUED:
        announcement = JobCancelled(correlation_id=correlation_id, payload=ref)
        if await state.jobs.cancel_queued(job_id, announcement) is not None:
            await _announce_outbox(state, job_id, announcement)
            await _delete_files(state, job)
            return
        job = await state.jobs.get_owned(job_id, user.user_id)  # claimed meanwhile
    if job.status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        announcement = JobCancelled(correlation_id=correlation_id, payload=ref)
        cancelled = await state.jobs.cancel(job_id, announcement)
        if cancelled is not None:
            try:
                await state.publisher.publish(
                    JobCancelRequested(correlation_id=correlation_id, payload=ref)
                )
            except AppError:
                # The job is already `cancelled` in MongoDB, so a converter that picks it up
                # skips it; the event only makes a running conversion stop sooner.
                log.warning("cancel of %s recorded but not announced", job_id)
            await _delete_files(state, job)
            return
        job = await state.jobs.get_owned(job_id, user.user_id)
    if job.outbox:
        # Its final event is still unsent (the broker was out): sent now, or the delete is
        # refused with the broker's 503, so that deleting a job never swallows its news.
        await state.publisher.publish(event_adapter.validate_python(job.outbox))
    await _delete_files(state, job)
    await state.jobs.delete(job_id)


async def _announce_outbox(state: GatewayState, job_id: str, event: Event) -> None:
    """Publish the event just recorded in the job's outbox, then clear it. Whatever fails is
    left to the converter's outbox sweep (or its skip of the job's message)."""
    try:
        await state.publisher.publish(event)
    except AppError:
        log.warning("%s of %s recorded but not yet announced", event.type, job_id)
        return
    try:
        await state.jobs.clear_outbox(job_id, event.event_id)
    except Exception:  # sent already: at worst the sweep sends it once more
        log.warning("outbox of %s not cleared", job_id, exc_info=True)


async def _delete_files(state: GatewayState, job: Job) -> None:
    for blob_id in (job.source_blob_id, job.output_blob_id):
        if blob_id:
            await state.blobs.delete(blob_id)
