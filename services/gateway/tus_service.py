"""Resumable uploads (tus): create, append, finish into a job, terminate, expire.

Bytes go into a partial blob as they arrive and its durable length is the upload's offset, so a
dropped connection keeps what arrived and a crash loses at most the request in flight. The
writer holds the upload's lease; the one whose append reaches the declared length commits the
blob and records the job under an id fixed at creation, so the job exists exactly once however
often (or however concurrently) the last bytes are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError
from starlette.requests import ClientDisconnect

from services.gateway.precheck import check_against_source
from services.gateway.quota import admit_job
from services.gateway.service import clean_filename
from services.gateway.state import GatewayState
from services.gateway.tus_protocol import OffsetMismatch, UploadLocked, split_metadata
from services.gateway.tus_store import Upload, UploadStore
from shared.blobstore import BlobNotFound, PartialOffsetMismatch
from shared.errors import (
    AppError,
    EmptyFile,
    ErrorCode,
    Gone,
    NotFound,
    TooLarge,
    UnsupportedMedia,
)
from shared.events import JobSubmitted, JobSubmittedPayload
from shared.jobs import Job, SourceInfo, utcnow
from shared.media.sniff import SNIFF_BYTES, sniff_container
from shared.metrics import UPLOAD_BYTES
from shared.options import ConversionOptions
from shared.storage_space import ensure_upload_space
from shared.tokens import Claims

log = logging.getLogger(__name__)

# A writer renews its lease while it appends; one that died holding it is replaced this long
# after its last renewal.
LEASE = timedelta(seconds=30)
RENEW_EVERY = 10.0
# A body that sends nothing for this long ends its request: what arrived is kept.
IDLE_TIMEOUT = 60.0


@dataclass
class Progress:
    """Where an upload stands, for the answer to a request."""

    upload: Upload
    offset: int

    @property
    def job_id(self) -> str | None:
        return self.upload.job_id if self.upload.done else None


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the upload is larger than the limit of {limit} bytes")


async def create(
    state: GatewayState,
    uploads: UploadStore,
    user: Claims,
    length: int,
    metadata_header: str | None,
    metadata: dict[str, str],
) -> Upload:
    """Record a new upload and its empty partial blob; every check that needs no bytes first."""
    if length > state.settings.max_upload_bytes:
        raise _too_large(state.settings.max_upload_bytes)
    if length == 0:
        raise EmptyFile
    filename, fields = split_metadata(metadata)
    ConversionOptions.from_form(fields)  # 422 invalid_options before anything is stored
    await _check_quota(state, user.user_id, length)
    await ensure_upload_space(state.blobs, state.settings.min_free_bytes, length)
    now = utcnow()
    upload = Upload(
        id=uuid.uuid4().hex,
        user_id=user.user_id,
        user_email=user.email,
        user_email_verified=user.email_verified,
        length=length,
        metadata=metadata_header,
        filename=clean_filename(filename),
        fields=fields,
        job_id=uuid.uuid4().hex,
        created_at=now,
        expires_at=now + timedelta(hours=state.settings.upload_expiry_hours),
    )
    # The document first: a crash before the blob leaves a document the sweep removes.
    await uploads.insert(upload)
    await state.blobs.create_partial(upload.blob_id)
    return upload


async def status(
    state: GatewayState, uploads: UploadStore, user: Claims, upload_id: str
) -> Progress:
    upload = await _owned(uploads, user, upload_id)
    if upload.done:
        return Progress(upload, upload.length)
    offset = await _stored_length(state, uploads, upload)
    if offset == upload.length:
        # Its last bytes arrived but the job was not recorded (the broker was down, or the
        # gateway died): a client that sees the full offset sends nothing more, so finish now.
        return await _finish_if_free(state, uploads, user, upload)
    return Progress(upload, offset)


async def receive(
    state: GatewayState,
    uploads: UploadStore,
    user: Claims,
    upload_id: str,
    offset: int,
    declared: int | None,
    body: AsyncIterator[bytes],
) -> Progress:
    """Append a request body at `offset`; finish the upload when it is complete."""
    upload = await _owned(uploads, user, upload_id)
    if upload.done:
        if offset != upload.length:
            raise OffsetMismatch(f"the upload is complete at offset {upload.length}")
        return Progress(upload, upload.length)
    if declared is not None and offset + declared > upload.length:
        raise TooLarge("the body goes past the upload's declared length")
    claimed = await uploads.claim(upload.id, user.user_id, LEASE)
    if claimed is None:
        raise UploadLocked("another request is writing this upload; retry once it has ended")
    return await _append_holding_lease(state, uploads, user, claimed, offset, body)


async def terminate(
    state: GatewayState, uploads: UploadStore, user: Claims, upload_id: str
) -> None:
    """Remove the upload (its job, once created, stays). A request still writing it fails."""
    upload = await _owned(uploads, user, upload_id, allow_expired=True)
    await uploads.delete(upload.id)
    if not upload.done:
        await state.blobs.delete_partial(upload.blob_id)


async def sweep(state: GatewayState, uploads: UploadStore, now: datetime | None = None) -> int:
    """Remove expired uploads: the partial blob first, so a crash leaves only a document."""
    removed = 0
    for upload in await uploads.expired(now or utcnow()):
        if not upload.done:
            await state.blobs.delete_partial(upload.blob_id)
        await uploads.delete(upload.id)
        removed += 1
    if removed:
        log.info("upload sweep: %d expired uploads removed", removed)
    return removed


async def _owned(
    uploads: UploadStore, user: Claims, upload_id: str, *, allow_expired: bool = False
) -> Upload:
    upload = await uploads.get_owned(upload_id, user.user_id)
    if upload is None:
        raise NotFound("no such upload")
    if not allow_expired and not upload.done and upload.expires_at <= utcnow():
        raise Gone("this upload has expired; start a new one", code=ErrorCode.UPLOAD_EXPIRED)
    return upload


async def _stored_length(state: GatewayState, uploads: UploadStore, upload: Upload) -> int:
    try:
        return await state.blobs.partial_length(upload.blob_id)
    except BlobNotFound:
        # Terminated meanwhile, or its blob never made it: either way it is gone.
        raise NotFound("no such upload") from None


async def _finish_if_free(
    state: GatewayState, uploads: UploadStore, user: Claims, upload: Upload
) -> Progress:
    claimed = await uploads.claim(upload.id, user.user_id, LEASE)
    if claimed is None:
        return Progress(upload, upload.length)  # its writer is finishing it right now
    try:
        if claimed.done:
            return Progress(claimed, claimed.length)
        return await _finish(state, uploads, claimed)
    finally:
        await uploads.release(claimed)


async def _append_holding_lease(
    state: GatewayState,
    uploads: UploadStore,
    user: Claims,
    upload: Upload,
    offset: int,
    body: AsyncIterator[bytes],
) -> Progress:
    try:
        if upload.done:
            if offset != upload.length:
                raise OffsetMismatch(f"the upload is complete at offset {upload.length}")
            return Progress(upload, upload.length)
        stored = await _stored_length(state, uploads, upload)
        if offset != stored:
            raise OffsetMismatch(f"the upload is at offset {stored}, not {offset}")
        await ensure_upload_space(
            state.blobs, state.settings.min_free_bytes, upload.length - offset
        )
        reader = _Body(body, upload.length - offset)
        if upload.container is None:
            reader.head = await state.blobs.partial_head(upload.blob_id, SNIFF_BYTES)
            reader.complete_at = upload.length - offset
        async with _lease_kept(uploads, upload, reader):
            try:
                new_offset = await state.blobs.append_partial(
                    upload.blob_id, offset, reader.chunks()
                )
            except PartialOffsetMismatch as exc:
                raise OffsetMismatch(f"the upload is at offset {exc.length}") from None
            except BlobNotFound:
                raise NotFound("no such upload") from None
            except UnsupportedMedia:
                await _discard(state, uploads, upload)
                raise
        if reader.container is not None and upload.container is None:
            upload.container = reader.container
            await uploads.renew(upload, LEASE)
        if new_offset == upload.length:
            return await _finish(state, uploads, upload)
        return Progress(upload, new_offset)
    finally:
        await uploads.release(upload, container=upload.container)


async def _finish(state: GatewayState, uploads: UploadStore, upload: Upload) -> Progress:
    """Commit the blob and record the job (once: its id was fixed at creation)."""
    try:
        size = await state.blobs.commit_partial(upload.blob_id)
    except BlobNotFound:
        raise NotFound("no such upload") from None
    options = ConversionOptions.from_form(upload.fields)
    try:
        await check_against_source(
            state.libav,
            state.blobs,
            upload.blob_id,
            size,
            options,
            state.settings.max_source_seconds,
        )
    except AppError:
        await _discard(state, uploads, upload, committed=True)
        raise
    job = Job(
        id=upload.job_id,
        user_id=upload.user_id,
        user_email=upload.user_email,
        user_email_verified=upload.user_email_verified,
        filename=upload.filename,
        options=options.normalized(),
        source_blob_id=upload.blob_id,
        source=SourceInfo(size=size, container=upload.container),
        correlation_id=upload.id,
    )
    try:
        async with admit_job(state, upload.user_id, size):
            await _record_and_announce(state, job, upload, size)
    except _AlreadyRecorded:
        pass  # by an earlier attempt that did not get to mark the upload done
    upload.done = True
    await uploads.release(upload, done=True)
    log.info("upload %s finished as job %s: %d bytes", upload.id, job.id, size)
    return Progress(upload, upload.length)


class _AlreadyRecorded(Exception):
    """The job exists already; raised inside the quota's block so it is not counted twice."""


class _OnlyChecking(Exception):
    """Leaves the quota's block at once: its limits were checked, nothing is taken."""


async def _check_quota(state: GatewayState, user_id: str, length: int) -> None:
    """Refuse at creation an upload whose job the account's limits would refuse at its end;
    the job itself is counted when its last byte lands."""
    with contextlib.suppress(_OnlyChecking):
        async with admit_job(state, user_id, length):
            raise _OnlyChecking


async def _record_and_announce(state: GatewayState, job: Job, upload: Upload, size: int) -> None:
    try:
        await state.jobs.insert(job)
    except DuplicateKeyError:
        raise _AlreadyRecorded from None
    UPLOAD_BYTES.inc(size)
    try:
        await state.publisher.publish(
            JobSubmitted(
                correlation_id=upload.id,
                payload=JobSubmittedPayload.from_job(
                    job, source_blob_id=upload.blob_id, size=size, options=job.options
                ),
            )
        )
    except BaseException:
        # Unannounced, the job would sit queued: undone, so that the client's retry (or its
        # HEAD) records and announces it again.
        await state.jobs.delete(job.id)
        raise


async def _discard(
    state: GatewayState, uploads: UploadStore, upload: Upload, *, committed: bool = False
) -> None:
    if committed:
        await state.blobs.delete(upload.blob_id)
    else:
        await state.blobs.delete_partial(upload.blob_id)
    await uploads.delete(upload.id)


class _Body:
    """A request body as the blob store reads it: capped at what the upload still lacks,
    sniffed at the start of the file, and ended (not failed) when the client goes away or
    stalls, so that what did arrive is kept and the client can resume after it."""

    def __init__(self, body: AsyncIterator[bytes], remaining: int) -> None:
        self._body = body
        self._remaining = remaining
        self.received = 0
        # The file's first bytes, while they are still to be recognised (None: done already).
        self.head: bytes | None = None
        self.complete_at = -1
        self.container: str | None = None
        self.lease_lost = False

    async def chunks(self) -> AsyncIterator[bytes]:
        pending = bytearray(self.head) if self.head is not None else None
        if pending is not None and len(pending) >= SNIFF_BYTES:
            self._sniff(bytes(pending))
            pending = None
        while True:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    chunk = await anext(self._body)
            except StopAsyncIteration:
                break
            except (ClientDisconnect, TimeoutError):
                log.info("upload body ended early after %d bytes; kept", self.received)
                break
            if self.lease_lost:
                raise UploadLocked("this upload was taken over by another request")
            self.received += len(chunk)
            if self.received > self._remaining:
                raise TooLarge("the body goes past the upload's declared length")
            if pending is not None:
                pending.extend(chunk[: SNIFF_BYTES - len(pending)])
                if len(pending) >= SNIFF_BYTES:
                    self._sniff(bytes(pending))
                    pending = None
            yield chunk
        if pending is not None and self.received == self.complete_at:
            self._sniff(bytes(pending))  # a file shorter than the sniffing window

    def _sniff(self, head: bytes) -> None:
        container = sniff_container(head)
        if container is None:
            raise UnsupportedMedia("the file is not an audio or video container")
        self.container = container


@contextlib.asynccontextmanager
async def _lease_kept(uploads: UploadStore, upload: Upload, reader: _Body) -> AsyncIterator[None]:
    async def renew() -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            if not await uploads.renew(upload, LEASE):
                reader.lease_lost = True
                return

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
