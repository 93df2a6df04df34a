"""Typed dependencies, so that routes read like their contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.state import GatewayState
from shared.errors import Unauthorized
from shared.tokens import Claims, bearer_token


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


State = Annotated[GatewayState, Depends(get_state)]


async def current_user(request: Request, state: State) -> Claims:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("log in first: send `Authorization: Bearer <access token>`")
    return await state.tokens.verify(token)


CurrentUser = Annotated[Claims, Depends(current_user)]
