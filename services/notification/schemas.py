"""The notification document kept in MongoDB and the view the HTTP API returns."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.events import EventType
from shared.notices import NoticeType, NotificationView

NOTIFICATIONS_COLLECTION = "notifications"


class MailStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    # The mail server refused the message for good; retrying cannot help.
    REJECTED = "rejected"
    # Every retry within the retry window failed; recorded, no longer retried.
    FAILED = "failed"
    # The owner's address was not proven when the job was submitted: nothing is mailed there.
    UNVERIFIED = "unverified"


def notification_id(job_id: str, event_type: EventType) -> str:
    """One notification per job per outcome, whatever the event id of a duplicate says."""
    return f"{job_id}:{event_type}"


class Notification(BaseModel):
    """One notification as stored (`_id` is `id`), with the state of its email."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    user_id: str
    user_email: str
    job_id: str | None
    type: EventType | NoticeType
    title: str
    body: str
    link: str | None = None
    read: bool = False
    created_at: datetime
    event_id: str
    mail_status: MailStatus = MailStatus.PENDING
    mail_attempts: int = 0
    mail_error: str | None = None
    sent_at: datetime | None = None
    # Who is sending the mail right now, and until when the claim holds (see store.claim_mail).
    claim_owner: str | None = None
    claim_until: datetime | None = None

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="python")

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Notification:
        for key in ("created_at", "sent_at", "claim_until"):
            value = doc.get(key)
            if isinstance(value, datetime) and value.tzinfo is None:
                doc[key] = value.replace(tzinfo=UTC)
        return cls.model_validate(doc)


def notification_view(note: Notification) -> NotificationView:
    return NotificationView(
        id=note.id,
        job_id=note.job_id,
        type=note.type,
        title=note.title,
        body=note.body,
        link=note.link,
        read=note.read,
        created_at=note.created_at,
    )
