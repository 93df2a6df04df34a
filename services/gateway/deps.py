"""Typed dependencies, so that routes read like their contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.gateway.state import GatewayState
from shared.errors import Unauthorized
from shared.tokens import Claims


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


State = Annotated[GatewayState, Depends(get_state)]


# Declared so that OpenAPI documents the bearer scheme; the check itself is ours (401 with a code).
_bearer = HTTPBearer(auto_error=False, description="the access token from /v1/auth/login")


async def current_user(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Claims:
    token = (
        credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    )
    if token is None:
        raise Unauthorized("log in first: send `Authorization: Bearer <access token>`")
    return await state.tokens.verify(token)


CurrentUser = Annotated[Claims, Depends(current_user)]
