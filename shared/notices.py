"""The public shapes of in-app notifications: served by notification, documented by the gateway."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from shared.events import EventType


class NoticeType(StrEnum):
    """Notifications about something other than a job."""

    WEBHOOK_DISABLED = "webhook.disabled"


class NotificationView(BaseModel):
    id: str
    # None for notices that concern no job (a disabled webhook).
    job_id: str | None
    type: EventType | NoticeType
    title: str
    body: str
    link: str | None
    read: bool
    created_at: datetime


class NotificationList(BaseModel):
    items: list[NotificationView]


class MarkRead(BaseModel):
    """Which notifications to mark read; all of the caller's when `ids` is omitted."""

    ids: list[str] | None = Field(default=None, max_length=500)
