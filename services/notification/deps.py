"""Typed dependencies, so that routes read like their contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.notification.state import NotificationState
from shared.apikeys import looks_like_key
from shared.errors import ErrorCode, Unauthorized
from shared.tokens import Claims, bearer_token


def get_state(request: Request) -> NotificationState:
    state: NotificationState = request.app.state.notification
    return state


State = Annotated[NotificationState, Depends(get_state)]


async def current_user(request: Request, state: State) -> Claims:
    """The caller, from the access token or API key the gateway forwards; checked here, not
    trusted (the key's scope was the gateway's to check)."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("log in first: send `Authorization: Bearer <access token>`")
    if looks_like_key(token):
        owner = await state.api_keys.verify(token)
        if owner is None:
            raise Unauthorized("invalid or revoked API key", code=ErrorCode.INVALID_TOKEN)
        return Claims(user_id=owner.user_id, email=owner.email)
    return await state.tokens.verify(token)


CurrentUser = Annotated[Claims, Depends(current_user)]
