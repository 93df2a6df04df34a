"""Two attempts at one job, and a cancel at the last moment: an output never outlives its job,
and one attempt never removes the output another recorded.

Real converters on the file blob store, nx-27017 and RabbitMQ, running real FFmpeg.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from services.converter.retention import Requeuer, RetentionPolicy, job_id_of, submitted_event
from services.converter.service import Converter
from shared.blobstore.file import FileBlobStore
from shared.events import JobCancelled, JobRef, JobSubmitted, JobSubmittedPayload
from shared.jobs import Job, JobStatus, SourceInfo, utcnow
from shared.jobstore import JobStore
from shared.media import MediaPool
from shared.messaging import EventPublisher, connect
from shared.mongo import mongo_client
from shared.settings import Settings
from shared.topology import Topology
from tests.support.amqp import delete_topology
from tests.support.media import MediaFactory

# Sources are kept, so that a late attempt still finds one to convert.
KEEP_SOURCES = RetentionPolicy(source_days=1, output_days=7, stuck_hours=24)


class HookedFileStore(FileBlobStore):
    """The real file store, running `after_output` once an output is committed: where a
    user's cancel can land at the worst moment."""

    after_output: Callable[[], Awaitable[None]] | None = None
    sources_stuck = False  # removing a source fails, as a GridFS outage would make it

    async def delete(self, blob_id: str) -> None:
        if self.sources_stuck and blob_id.endswith("-src"):
            raise OSError("the store refused the delete")
        await super().delete(blob_id)

    async def write_file(self, blob_id: str, path: Path) -> int:
        size = await super().write_file(blob_id, path)
        if blob_id.endswith("-out") and self.after_output is not None:
            await self.after_output()
        return size


@dataclass
class Rig:
    jobs: JobStore
    blobs: HookedFileStore
    publisher: EventPublisher
    root: Path
    libav: MediaPool

    def converter(self, work_dir: Path) -> Converter:
        return Converter(
            jobs=self.jobs,
            blobs=self.blobs,
            publisher=self.publisher,
            work_dir=work_dir,
            libav=self.libav,
            retention=KEEP_SOURCES,
        )

    def outputs(self) -> list[str]:
        return sorted(p.name for p in self.root.rglob("*-out"))

    async def submit(self, source: Path, filename: str) -> JobSubmitted:
        job_id = uuid.uuid4().hex
        size = await self.blobs.write_file(f"{job_id}-src", source)
        await self.jobs.insert(
            Job(
                id=job_id,
                user_id="u1",
                user_email="u1@example.com",
                filename=filename,
                source_blob_id=f"{job_id}-src",
                source=SourceInfo(size=size),
            )
        )
        return JobSubmitted(
            payload=JobSubmittedPayload(
                job_id=job_id,
                user_id="u1",
                user_email="u1@example.com",
                filename=filename,
                source_blob_id=f"{job_id}-src",
                size=size,
            )
        )


@pytest.fixture
async def rig(settings: Settings, tmp_path: Path, libav: MediaPool) -> AsyncIterator[Rig]:
    mongo = mongo_client(settings.require_mongo_url(), 5)
    amqp = await connect(settings.amqp_url, "test-attempts", 5)
    try:
        publisher = await EventPublisher.open(amqp, Topology(settings.amqp_prefix), 5)
        root = tmp_path / "blobs"
        yield Rig(JobStore(mongo[settings.mongo_db]), HookedFileStore(root), publisher, root, libav)
    finally:
        await amqp.close()
        await mongo.close()
        await delete_topology(settings.amqp_url, settings.amqp_prefix)


async def test_a_second_attempt_leaves_the_first_ones_output(
    rig: Rig, media: MediaFactory, tmp_path: Path
) -> None:
    # The broker handed the job out again (the first converter lost its connection, not its
    # database) while the first attempt was still converting.
    event = await rig.submit(media.long_tone(), "twice.flac")
    first = asyncio.create_task(rig.converter(tmp_path / "a").convert(event))
    await asyncio.sleep(1.0)
    second = asyncio.create_task(rig.converter(tmp_path / "b").convert(event))
    await asyncio.gather(first, second)
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 2
    # The recorded output is there; the other attempt's is gone.
    assert rig.outputs() == [job.output_blob_id]
    assert job.output is not None
    assert await rig.blobs.size(job.output_blob_id or "") == job.output.size


async def test_a_republished_copy_never_takes_a_running_job(
    rig: Rig, media: MediaFactory, tmp_path: Path
) -> None:
    # The requeue sweep published the job again while its first message still waited in a
    # long queue: the copy reaches a second converter while the first converts.
    event = await rig.submit(media.long_tone(), "copied.flac")
    first = asyncio.create_task(rig.converter(tmp_path / "a").convert(event))
    await asyncio.sleep(1.0)
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.source_blob_id is not None
    copy = submitted_event(job, job.source_blob_id)
    assert copy.event_id != event.event_id
    await rig.converter(tmp_path / "b").convert(copy)
    assert not first.done()
    await first
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 1


async def test_converters_sweeping_at_once_republish_a_job_once(
    rig: Rig, media: MediaFactory
) -> None:
    event = await rig.submit(media.h264_aac(1), "lost.mp4")
    sweepers = [Requeuer(rig.jobs, rig.publisher, after=1) for _ in range(4)]
    later = utcnow() + timedelta(seconds=5)
    counts = await asyncio.gather(*(s.sweep(later) for s in sweepers))
    assert sum(counts) == 1
    # Published again just now: not yet due, then due once more a period later.
    assert sum(await asyncio.gather(*(s.sweep(later) for s in sweepers))) == 0
    again = later + timedelta(seconds=2)
    assert sum(await asyncio.gather(*(s.sweep(again) for s in sweepers))) == 1
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.status is JobStatus.QUEUED


async def test_a_cancel_while_the_output_is_stored_leaves_no_output(
    rig: Rig, media: MediaFactory, tmp_path: Path
) -> None:
    converter = rig.converter(tmp_path / "w")
    event = await rig.submit(media.h264_aac(3), "late.mp4")

    async def users_cancel() -> None:
        # What the gateway does: the job is cancelled in the database, then its converter told.
        ref = JobRef(job_id=event.payload.job_id, user_id=event.payload.user_id)
        assert await rig.jobs.cancel(ref.job_id, JobCancelled(payload=ref)) is not None
        converter.request_cancel(event.payload.job_id)
        await asyncio.sleep(0)

    rig.blobs.after_output = users_cancel
    await converter.convert(event)
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    assert job.output_blob_id is None
    assert rig.outputs() == []
    assert job.outbox is None  # the stopped converter announced the cancel


async def test_a_source_that_cannot_be_removed_leaves_the_job_completed_and_announced(
    rig: Rig, media: MediaFactory, tmp_path: Path
) -> None:
    converter = rig.converter(tmp_path / "w")
    converter.retention = RetentionPolicy(source_days=0, output_days=7, stuck_hours=24)
    rig.blobs.sources_stuck = True
    event = await rig.submit(media.h264_aac(2), "kept.mp4")
    await converter.convert(event)
    job = await rig.jobs.get(event.payload.job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.outbox is None  # job.completed went out and is marked sent
    # Still named by the job, so the retention sweep removes it once the store lets it.
    assert job.source_blob_id == f"{job.id}-src"
    assert rig.blobs.path_of(job.source_blob_id).exists()


@pytest.mark.parametrize(
    ("blob_id", "job_id"),
    [
        ("0123abcd-src", "0123abcd"),
        ("0123abcd-3-out", "0123abcd"),
        ("0123abcd-out", "0123abcd"),  # outputs stored before attempts were named
        ("0123abcd-x-out", None),
        ("something-else", None),
    ],
)
def test_the_orphan_sweep_knows_whose_blob_it_is(blob_id: str, job_id: str | None) -> None:
    assert job_id_of(blob_id) == job_id
