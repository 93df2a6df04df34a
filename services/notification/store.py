"""Every MongoDB access of the notification service."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.notification.schemas import NOTIFICATIONS_COLLECTION, MailStatus, Notification

LIST_LIMIT = 100


class Claim(Enum):
    """The outcome of trying to become the one sender of a notification's mail."""

    CLAIMED = "claimed"
    DONE = "done"
    HELD = "held"


class NotificationStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db
        self._notes: AsyncCollection[dict[str, Any]] = db[NOTIFICATIONS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._notes.create_index(
            [("user_id", ASCENDING), ("created_at", DESCENDING)], name="user_newest"
        )

    async def ping(self) -> None:
        await self._db.command("ping")

    async def add(
        self, note: Notification, owner: str, now: datetime, hold_for: timedelta
    ) -> tuple[Notification, bool]:
        """Store a new notification with its mail claimed by `owner` (see `claim_mail`), in one
        write; or return the one already stored under its id. True when ours was stored."""
        claimed = note.model_copy(
            update={"claim_owner": owner, "claim_until": now + hold_for, "mail_attempts": 1}
        )
        try:
            await self._notes.insert_one(claimed.to_document())
        except DuplicateKeyError:
            doc = await self._notes.find_one({"_id": note.id})
            if doc is None:  # deleted between the two calls; store ours after all
                return await self.add(note, owner, now, hold_for)
            return Notification.from_document(doc), False
        return claimed, True

    async def claim_mail(
        self, note_id: str, owner: str, now: datetime, hold_for: timedelta
    ) -> Claim:
        """Become the one sender of a pending mail, for `hold_for` at most.

        Two deliveries of one event may run at once; only the claimant sends, so the user gets
        one mail. The claim expires so that a sender that died does not block its mail forever.
        """
        doc = await self._notes.find_one_and_update(
            {
                "_id": note_id,
                "mail_status": str(MailStatus.PENDING),
                "$or": [{"claim_until": None}, {"claim_until": {"$lt": now}}],
            },
            {
                "$set": {"claim_owner": owner, "claim_until": now + hold_for},
                "$inc": {"mail_attempts": 1},
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return Claim.CLAIMED
        current = await self._notes.find_one({"_id": note_id}, {"mail_status": 1})
        if current is None or current.get("mail_status") != MailStatus.PENDING:
            return Claim.DONE
        return Claim.HELD

    async def finish_mail(
        self, note_id: str, owner: str, status: MailStatus, now: datetime, error: str | None
    ) -> None:
        await self._notes.update_one(
            {"_id": note_id, "claim_owner": owner},
            {
                "$set": {
                    "mail_status": str(status),
                    "mail_error": error,
                    "sent_at": now if status is MailStatus.SENT else None,
                    "claim_owner": None,
                    "claim_until": None,
                }
            },
        )

    async def give_up_mail(self, note_id: str, now: datetime, error: str) -> None:
        """Record that the mail could not be delivered within the retry window."""
        await self._notes.update_one(
            {"_id": note_id, "mail_status": str(MailStatus.PENDING)},
            {
                "$set": {
                    "mail_status": str(MailStatus.FAILED),
                    "mail_error": error,
                    "failed_at": now,
                    "claim_owner": None,
                    "claim_until": None,
                }
            },
        )

    async def release_mail(self, note_id: str, owner: str, error: str) -> None:
        """Give up a claim after a failed attempt, so the next delivery may try at once."""
        await self._notes.update_one(
            {"_id": note_id, "claim_owner": owner},
            {"$set": {"mail_error": error, "claim_owner": None, "claim_until": None}},
        )

    async def get(self, note_id: str) -> Notification | None:
        doc = await self._notes.find_one({"_id": note_id})
        return Notification.from_document(doc) if doc is not None else None

    async def mark_read(self, user_id: str, note_ids: list[str] | None) -> None:
        """Mark the user's notifications read: the given ones, or all when `note_ids` is None."""
        query: dict[str, Any] = {"user_id": user_id, "read": False}
        if note_ids is not None:
            query["_id"] = {"$in": note_ids}
        await self._notes.update_many(query, {"$set": {"read": True}})

    async def list_for_user(self, user_id: str, limit: int = LIST_LIMIT) -> list[Notification]:
        cursor = self._notes.find({"user_id": user_id}).sort("created_at", DESCENDING).limit(limit)
        return [Notification.from_document(doc) async for doc in cursor]
