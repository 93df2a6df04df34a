"""Resumable uploads in MongoDB: who owns each, what it will become, and who is writing it.

The bytes and their durable length live in the blob store (a partial blob); this document
holds the rest. A writer holds a lease (`lease`, `lease_until`) while it appends, so that two
requests never write one upload at once and exactly one of them turns the last byte into a job.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from shared.jobs import utcnow

UPLOADS_COLLECTION = "uploads"


class Upload(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    user_id: str
    user_email: str
    user_email_verified: bool = False
    length: int
    # The client's Upload-Metadata header as sent, echoed back on HEAD.
    metadata: str | None = None
    filename: str
    # The conversion options as sent (form-like strings), validated at creation and again,
    # against the file, once it is complete.
    fields: dict[str, str] = Field(default_factory=dict)
    job_id: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    # Set once the first bytes are recognised as media.
    container: str | None = None
    # Set once the job exists: the upload is finished.
    done: bool = False
    lease: str | None = None
    lease_until: datetime | None = None

    @field_validator("created_at", "expires_at", "lease_until")
    @classmethod
    def _assume_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @property
    def blob_id(self) -> str:
        return f"{self.job_id}-src"

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="python")


class UploadStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._uploads = db[UPLOADS_COLLECTION]

    async def insert(self, upload: Upload) -> None:
        await self._uploads.insert_one(upload.to_document())

    async def get_owned(self, upload_id: str, user_id: str) -> Upload | None:
        doc = await self._uploads.find_one({"_id": upload_id, "user_id": user_id})
        return Upload.model_validate(doc) if doc else None

    async def claim(self, upload_id: str, user_id: str, hold: timedelta) -> Upload | None:
        """Take the upload's lease, unless another writer holds a live one."""
        now = utcnow()
        doc = await self._uploads.find_one_and_update(
            {
                "_id": upload_id,
                "user_id": user_id,
                "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
            },
            {"$set": {"lease": secrets.token_hex(8), "lease_until": now + hold}},
            return_document=ReturnDocument.AFTER,
        )
        return Upload.model_validate(doc) if doc else None

    async def renew(self, upload: Upload, hold: timedelta) -> bool:
        done = await self._uploads.update_one(
            {"_id": upload.id, "lease": upload.lease},
            {"$set": {"lease_until": utcnow() + hold}},
        )
        return done.matched_count == 1

    async def release(self, upload: Upload, **changes: Any) -> None:
        """Give the lease back, recording `changes` with it."""
        await self._uploads.update_one(
            {"_id": upload.id, "lease": upload.lease},
            {"$set": {"lease": None, "lease_until": None, **changes}},
        )

    async def delete(self, upload_id: str) -> None:
        await self._uploads.delete_one({"_id": upload_id})

    async def expired(self, now: datetime, limit: int = 200) -> list[Upload]:
        """Uploads past their expiry that nobody is writing."""
        cursor = self._uploads.find(
            {
                "expires_at": {"$lt": now},
                "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}],
            }
        ).limit(limit)
        return [Upload.model_validate(doc) async for doc in cursor]

    async def ensure_indexes(self) -> None:
        await self._uploads.create_index([("expires_at", 1)])
