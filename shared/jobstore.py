"""Every MongoDB query on job documents, used by the gateway and the converter alike.

State changes are compare-and-set updates (`find_one_and_update` filtered on the expected
status), so two workers, a redelivery or a cancel racing a completion cannot both win.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.errors import NotFound, Unprocessable
from shared.events import Event
from shared.jobs import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    JOBS_COLLECTION,
    Job,
    JobError,
    JobStatus,
    OutputInfo,
    SourceInfo,
    utcnow,
)

_ACTIVE = [str(s) for s in ACTIVE_STATUSES]
_NEVER = datetime.min.replace(tzinfo=UTC)


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return datetime.fromisoformat(created), str(job_id)
    except (ValueError, TypeError) as exc:
        raise Unprocessable("cursor is not valid") from exc


class JobStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._jobs = db[JOBS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._jobs.create_index([("user_id", 1), ("created_at", DESCENDING)])
        await self._jobs.create_index([("status", 1)])
        await self._jobs.create_index([("user_id", 1), ("started_at", DESCENDING)])

    async def insert(self, job: Job) -> None:
        await self._jobs.insert_one(job.to_document())

    async def get(self, job_id: str) -> Job | None:
        doc = await self._jobs.find_one({"_id": job_id})
        return Job.from_document(doc) if doc else None

    async def get_owned(self, job_id: str, user_id: str) -> Job:
        """The job if it exists and belongs to `user_id`; another user's job is simply missing."""
        doc = await self._jobs.find_one({"_id": job_id, "user_id": user_id})
        if doc is None:
            raise NotFound("no such job")
        return Job.from_document(doc)

    async def list_for_user(
        self, user_id: str, limit: int, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        query: dict[str, Any] = {"user_id": user_id}
        if cursor:
            created, job_id = decode_cursor(cursor)
            query["$or"] = [
                {"created_at": {"$lt": created}},
                {"created_at": created, "_id": {"$lt": job_id}},
            ]
        found = self._jobs.find(query, sort=[("created_at", DESCENDING), ("_id", DESCENDING)])
        docs = await found.limit(limit + 1).to_list(limit + 1)
        jobs = [Job.from_document(d) for d in docs[:limit]]
        next_cursor = encode_cursor(jobs[-1]) if len(docs) > limit and jobs else None
        return jobs, next_cursor

    async def list_active(self, user_id: str, limit: int = 100) -> list[Job]:
        found = self._jobs.find(
            {"user_id": user_id, "status": {"$in": _ACTIVE}}, sort=[("created_at", DESCENDING)]
        )
        return [Job.from_document(d) for d in await found.limit(limit).to_list(limit)]

    async def _transition(
        self,
        job_id: str,
        from_statuses: list[str],
        changes: dict[str, Any],
        inc: dict[str, int] | None = None,
    ) -> Job | None:
        update: dict[str, Any] = {"$set": {**changes, "updated_at": utcnow()}}
        if inc:
            update["$inc"] = inc
        doc = await self._jobs.find_one_and_update(
            {"_id": job_id, "status": {"$in": from_statuses}},
            update,
            return_document=ReturnDocument.AFTER,
        )
        return Job.from_document(doc) if doc else None

    async def claim(self, job_id: str, message_id: str | None = None) -> Job | None:
        """Take a queued job for the message `message_id`, or a `processing` one that a dead
        worker left while holding that same message (the broker's redelivery); None otherwise:
        final, or held through another message (a republished copy while the job runs)."""
        doc = await self._jobs.find_one_and_update(
            {
                "_id": job_id,
                "$or": [
                    {"status": str(JobStatus.QUEUED)},
                    {"status": str(JobStatus.PROCESSING), "claimed_by": message_id},
                    # Claimed before claims were named: any redelivery may resume it.
                    {"status": str(JobStatus.PROCESSING), "claimed_by": None},
                ],
            },
            {
                "$set": {
                    "status": str(JobStatus.PROCESSING),
                    "claimed_by": message_id,
                    "updated_at": utcnow(),
                    # Not in the model: fair share reads it to tell who was served last.
                    "started_at": utcnow(),
                },
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        return Job.from_document(doc) if doc else None

    async def unclaimed_since(self, cutoff: datetime, limit: int = 500) -> list[Job]:
        """Queued jobs last published before `cutoff`: their message may be lost. A job never
        republished was published when it was created."""
        found = self._jobs.find(
            {
                "status": str(JobStatus.QUEUED),
                "$or": [
                    {"published_at": {"$lt": cutoff}},
                    {"published_at": None, "created_at": {"$lt": cutoff}},
                ],
            }
        ).limit(limit)
        return [Job.from_document(d) async for d in found]

    async def mark_republished(self, job: Job, now: datetime) -> bool:
        """Whether this caller won the right to publish `job` again: of several converters
        sweeping at once, only the one whose write still sees the publish time it read."""
        result = await self._jobs.update_one(
            {"_id": job.id, "status": str(JobStatus.QUEUED), "published_at": job.published_at},
            {"$set": {"published_at": now}},
        )
        return result.modified_count == 1

    async def set_imported_source(self, job_id: str, blob_id: str, size: int) -> bool:
        """Record a URL import's stored bytes on its still-queued job; False when the job was
        cancelled or deleted meanwhile (the caller then removes the bytes)."""
        result = await self._jobs.update_one(
            {"_id": job_id, "status": str(JobStatus.QUEUED), "source_blob_id": None},
            {"$set": {"source_blob_id": blob_id, "source.size": size, "updated_at": utcnow()}},
        )
        return result.modified_count == 1

    async def set_source(self, job_id: str, source: SourceInfo) -> None:
        await self._jobs.update_one(
            {"_id": job_id}, {"$set": {"source": source.model_dump(), "updated_at": utcnow()}}
        )

    async def set_progress(self, job_id: str, progress: int) -> None:
        await self._jobs.update_one(
            {"_id": job_id, "status": str(JobStatus.PROCESSING), "progress": {"$lt": progress}},
            {"$set": {"progress": progress, "updated_at": utcnow()}},
        )

    async def complete(
        self,
        job_id: str,
        output: OutputInfo,
        output_blob_id: str,
        outbox: Event,
        expires_at: datetime | None = None,
        source: SourceInfo | None = None,
    ) -> Job | None:
        """`source`: the source's description, when no `set_source` has stored it yet."""
        return await self._transition(
            job_id,
            [str(JobStatus.PROCESSING)],
            {
                "status": str(JobStatus.COMPLETED),
                "expires_at": expires_at,
                "progress": 100,
                "output": output.model_dump(),
                "output_blob_id": output_blob_id,
                "error": None,
                "outbox": outbox.model_dump(mode="json"),
                **_described(source),
            },
        )

    async def fail(
        self, job_id: str, error: JobError, outbox: Event, source: SourceInfo | None = None
    ) -> Job | None:
        return await self._transition(
            job_id,
            _ACTIVE,
            {
                "status": str(JobStatus.FAILED),
                "error": error.model_dump(mode="json"),
                "outbox": outbox.model_dump(mode="json"),
                **_described(source),
            },
        )

    async def clear_outbox(self, job_id: str, event_id: str, *, drop_source: bool = False) -> None:
        """Mark the final event `event_id` sent; with `drop_source`, forget the (removed)
        source blob in the same write."""
        changes: dict[str, Any] = {"outbox": None}
        if drop_source:
            changes["source_blob_id"] = None
        await self._jobs.update_one({"_id": job_id, "outbox.event_id": event_id}, {"$set": changes})

    async def with_pending_outbox(self, older_than: datetime, limit: int = 100) -> list[Job]:
        """Finished jobs whose final event may not have been published (recovery sweep)."""
        found = self._jobs.find({"outbox": {"$ne": None}}).limit(limit)
        jobs = [Job.from_document(d) async for d in found]
        return [j for j in jobs if j.outbox and j.updated_at < older_than]

    async def cancel_queued(self, job_id: str, outbox: Event) -> Job | None:
        """Cancel a job no converter has claimed; its `job.cancelled` goes in the outbox, as
        nobody else will announce it."""
        return await self._transition(
            job_id,
            [str(JobStatus.QUEUED)],
            {"status": str(JobStatus.CANCELLED), "outbox": outbox.model_dump(mode="json")},
        )

    async def cancel(self, job_id: str, outbox: Event) -> Job | None:
        """Cancel a queued or running job. The converter running it announces `outbox` once
        FFmpeg has stopped; if that converter is gone, the job's next delivery or the outbox
        sweep does."""
        return await self._transition(
            job_id,
            _ACTIVE,
            {"status": str(JobStatus.CANCELLED), "outbox": outbox.model_dump(mode="json")},
        )

    async def drop_source(self, job_id: str) -> None:
        await self._jobs.update_one({"_id": job_id}, {"$set": {"source_blob_id": None}})

    async def expired_outputs(self, now: datetime, limit: int = 500) -> list[Job]:
        found = self._jobs.find(
            {
                "status": str(JobStatus.COMPLETED),
                "output_expired": False,
                "expires_at": {"$lt": now},
            }
        ).limit(limit)
        return [Job.from_document(d) async for d in found]

    async def mark_output_expired(self, job_id: str) -> None:
        await self._jobs.update_one(
            {"_id": job_id}, {"$set": {"output_expired": True, "output_blob_id": None}}
        )

    async def finished_with_source_before(self, cutoff: datetime, limit: int = 500) -> list[Job]:
        found = self._jobs.find(
            {
                "status": {"$in": [str(s) for s in FINAL_STATUSES]},
                "source_blob_id": {"$ne": None},
                "created_at": {"$lt": cutoff},
            }
        ).limit(limit)
        return [Job.from_document(d) async for d in found]

    async def untouched_active_since(self, cutoff: datetime, limit: int = 500) -> list[Job]:
        found = self._jobs.find({"status": {"$in": _ACTIVE}, "updated_at": {"$lt": cutoff}}).limit(
            limit
        )
        return [Job.from_document(d) async for d in found]

    async def existing_ids(self, job_ids: list[str]) -> set[str]:
        found = self._jobs.find({"_id": {"$in": job_ids}}, {"_id": 1})
        return {d["_id"] async for d in found}

    async def delete(self, job_id: str) -> None:
        await self._jobs.delete_one({"_id": job_id})

    async def ping(self) -> None:
        await self._jobs.database.command("ping")

    async def others_before(self, user_id: str, max_users: int = 50) -> bool:
        """Whether another account with a job queued should have its turn before `user_id`'s
        next job: it has fewer jobs running, or as many and started one less recently."""
        others = await self._jobs.distinct(
            "user_id", {"status": str(JobStatus.QUEUED), "user_id": {"$ne": user_id}}
        )
        if not others:
            return False
        mine = await self._share(user_id)
        for other in others[:max_users]:
            if await self._share(other) < mine:
                return True
        return False

    async def _share(self, user_id: str) -> tuple[int, datetime]:
        running = await self._jobs.count_documents(
            {"user_id": user_id, "status": str(JobStatus.PROCESSING)}
        )
        last = await self._jobs.find_one(
            # `$exists` too: nx-27017's `$ne: None` matches a missing field.
            {"user_id": user_id, "started_at": {"$exists": True, "$ne": None}},
            {"started_at": 1},
            sort=[("started_at", DESCENDING)],
        )
        return running, _moment(last["started_at"]) if last else _NEVER


def _moment(value: datetime | str) -> datetime:
    # nx-27017 keeps a datetime written by an update as its text; MongoDB keeps a datetime.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


USAGE_COLLECTION = "user_usage"
HOLDS_COLLECTION = "upload_holds"


class QuotaStore:
    """What per-account quotas count: jobs, uploads in flight ("holds") and a per-user counter
    document whose `version` serialises admissions of one user across gateway processes."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._jobs = db[JOBS_COLLECTION]
        self._usage = db[USAGE_COLLECTION]
        self._holds = db[HOLDS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._holds.create_index([("user_id", 1), ("expires_at", 1)])

    async def counter(self, user_id: str) -> dict[str, Any]:
        """`{version, day, jobs}`: the user's admission version and jobs admitted on `day`."""
        doc = await self._usage.find_one({"_id": user_id})
        if doc is None:
            with contextlib.suppress(DuplicateKeyError):  # another gateway made it first
                await self._usage.insert_one({"_id": user_id, "version": 0, "day": "", "jobs": 0})
            doc = await self._usage.find_one({"_id": user_id})
        assert doc is not None
        return doc

    async def admit(self, user_id: str, version: int, day: str, same_day: bool) -> bool:
        """Count one job on `day` if nobody admitted one for this user since `version` was read."""
        update: dict[str, Any] = (
            {"$inc": {"version": 1, "jobs": 1}}
            if same_day
            else {"$inc": {"version": 1}, "$set": {"day": day, "jobs": 1}}
        )
        found = await self._usage.find_one_and_update({"_id": user_id, "version": version}, update)
        return found is not None

    async def refund(self, user_id: str, day: str) -> None:
        await self._usage.update_one(
            {"_id": user_id, "day": day, "jobs": {"$gt": 0}}, {"$inc": {"jobs": -1}}
        )

    async def add_hold(self, hold_id: str, user_id: str, size: int, expires_at: datetime) -> None:
        await self._holds.insert_one(
            {"_id": hold_id, "user_id": user_id, "size": size, "expires_at": expires_at}
        )

    async def release(self, hold_id: str) -> None:
        await self._holds.delete_one({"_id": hold_id})

    async def holds(self, user_id: str, now: datetime) -> tuple[int, int]:
        """Uploads in flight and the bytes they announced; a hold whose upload died unreleased
        stops counting at its expiry."""
        await self._holds.delete_many({"user_id": user_id, "expires_at": {"$lte": now}})
        found = self._holds.find({"user_id": user_id, "expires_at": {"$gt": now}}, {"size": 1})
        sizes = [int(d.get("size") or 0) async for d in found]
        return len(sizes), sum(sizes)

    async def active_jobs(self, user_id: str) -> int:
        return await self._jobs.count_documents({"user_id": user_id, "status": {"$in": _ACTIVE}})

    async def stored_bytes(self, user_id: str) -> int:
        """Bytes of the user's sources still kept plus their outputs not yet expired."""
        kept = {"$ne": [{"$ifNull": ["$source_blob_id", None]}, None]}
        made = {"$ne": [{"$ifNull": ["$output_blob_id", None]}, None]}
        cursor = await self._jobs.aggregate(
            [
                # A cancel deletes the job's files at once but keeps the job to read.
                {"$match": {"user_id": user_id, "status": {"$ne": str(JobStatus.CANCELLED)}}},
                {
                    "$group": {
                        "_id": None,
                        "sources": {"$sum": {"$cond": [kept, {"$ifNull": ["$source.size", 0]}, 0]}},
                        "outputs": {"$sum": {"$cond": [made, {"$ifNull": ["$output.size", 0]}, 0]}},
                    }
                },
            ]
        )
        rows = await cursor.to_list()
        return int(rows[0]["sources"] + rows[0]["outputs"]) if rows else 0


def _described(source: SourceInfo | None) -> dict[str, Any]:
    return {} if source is None else {"source": source.model_dump()}
