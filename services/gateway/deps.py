"""Typed dependencies, so that routes read like their contract."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from services.gateway.state import GatewayState
from shared.accounts import Account
from shared.apikeys import KEY_SOCKET_SECONDS, InsufficientScope, Scope, looks_like_key
from shared.errors import ErrorCode, Unauthorized, Unavailable
from shared.tokens import Claims

log = logging.getLogger(__name__)


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


State = Annotated[GatewayState, Depends(get_state)]


# Declared so that OpenAPI documents the bearer scheme; the check itself is ours (401 with a code).
_bearer = HTTPBearer(
    auto_error=False, description="the access token from /v1/auth/login, or an API key `v2m_…`"
)


async def authenticate(state: GatewayState, credential: str) -> Claims:
    """The claims of an access token or an API key (`v2m_…`), checked in this process: a key
    against the key store (remembered a few seconds), a token against auth's public keys."""
    if not looks_like_key(credential):
        return await state.tokens.verify(credential)
    owner = await state.api_keys.verify(credential)
    if owner is None:
        raise Unauthorized("invalid or revoked API key", code=ErrorCode.INVALID_TOKEN)
    account = await _refuse_disabled(state, owner.user_id)
    return Claims(
        user_id=owner.user_id,
        email=owner.email,
        email_verified=account is not None and account.email_verified,
        expires_at=time.time() + KEY_SOCKET_SECONDS,
        scopes=frozenset(str(s) for s in owner.scopes),
        key_id=owner.key_id,
    )


async def key_still_valid(state: GatewayState, claims: Claims) -> bool:
    """Whether the key behind claims still exists and its account is not disabled (for a long
    WebSocket, which a request's check does not reach)."""
    if claims.key_id is None:
        return True
    if not await state.key_store.exists(claims.key_id):
        return False
    try:
        await _refuse_disabled(state, claims.user_id)
    except Unauthorized:
        return False
    return True


async def _refuse_disabled(state: GatewayState, user_id: str) -> Account | None:
    """The key owner's account as auth knows it (None: unknown), unless it is disabled."""
    try:
        account = await state.accounts.get(user_id)
    except Unavailable:
        # As for limits: auth being out does not stop keys that the key store still knows.
        log.warning("account %s unknown (auth unavailable); its key is let through", user_id)
        return None
    if account is not None and account.disabled:
        raise Unauthorized("this account is disabled", code=ErrorCode.INVALID_TOKEN)
    return account


def require_scopes(claims: Claims, required: list[str]) -> None:
    """Refuse an API key lacking a scope (403 `insufficient_scope`). An endpoint that declares
    no scope takes logins only: a key reaches nothing it was not explicitly granted."""
    if claims.scopes is None:
        return
    if not required:
        raise InsufficientScope("this endpoint takes a login, not an API key")
    missing = [s for s in required if s not in claims.scopes]
    if missing:
        raise InsufficientScope(f"this API key lacks the scope {', '.join(missing)}")


async def current_user(
    security_scopes: SecurityScopes,
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Claims:
    token = (
        credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None
    )
    if token is None:
        raise Unauthorized("log in first: send `Authorization: Bearer <access token>`")
    claims = await authenticate(state, token)
    require_scopes(claims, security_scopes.scopes)
    return claims


CurrentUser = Annotated[Claims, Depends(current_user)]
"""A login only (an API key is 403 `insufficient_scope`)."""
JobsReader = Annotated[Claims, Security(current_user, scopes=[Scope.JOBS_READ])]
JobsWriter = Annotated[Claims, Security(current_user, scopes=[Scope.JOBS_WRITE])]
WebhooksWriter = Annotated[Claims, Security(current_user, scopes=[Scope.WEBHOOKS_WRITE])]
