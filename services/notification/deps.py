"""Typed dependencies, so that routes read like their contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.notification.state import NotificationState
from shared.errors import Unauthorized
from shared.tokens import Claims, bearer_token


def get_state(request: Request) -> NotificationState:
    state: NotificationState = request.app.state.notification
    return state


State = Annotated[NotificationState, Depends(get_state)]


async def current_user(request: Request, state: State) -> Claims:
    """The caller, from the access token the gateway forwards; checked here, not trusted."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("log in first: send `Authorization: Bearer <access token>`")
    return await state.tokens.verify(token)


CurrentUser = Annotated[Claims, Depends(current_user)]
