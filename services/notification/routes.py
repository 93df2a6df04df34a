"""HTTP routes of the notification service: thin, the service does the work."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.notification.deps import CurrentUser, State
from services.notification.schemas import notification_view
from shared.notices import MarkRead, NotificationList

router = APIRouter(prefix="/v1")


@router.get("/notifications", response_model=NotificationList)
async def list_notifications(user: CurrentUser, state: State) -> NotificationList:
    """The caller's notifications, newest first (at most 100)."""
    notes = await state.service.list_for_user(user.user_id)
    return NotificationList(items=[notification_view(note) for note in notes])


@router.post("/notifications/read", status_code=204)
async def mark_read(body: MarkRead, user: CurrentUser, state: State) -> Response:
    await state.service.mark_read(user.user_id, body.ids)
    return Response(status_code=204)
