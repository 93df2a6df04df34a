"""Request dependencies as typed aliases, so routes read like their contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.errors import RefreshTokenReused
from services.auth.models import User
from services.auth.repository import AuthRepository
from services.auth.service import AuthService
from services.auth.state import AuthState
from shared.errors import Unauthorized
from shared.security import client_address, is_trusted_proxy
from shared.tokens import Claims


def get_state(request: Request) -> AuthState:
    return cast(AuthState, request.state.auth)


State = Annotated[AuthState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    """The one place that commits: after the route succeeds, before the response is sent."""
    async with state.sessions() as session:
        try:
            yield session
        except RefreshTokenReused:
            await session.commit()  # the family revocation is the point of this error
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


# scope="function" ends the dependency before the response goes out, so a client that gets a
# 201 can log in at once: its user is committed, not about to be.
DbSession = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_service(session: DbSession, state: State) -> AuthService:
    return AuthService(
        AuthRepository(session),
        state.signing_key,
        state.settings,
        state.throttle,
        state.hashing,
        state.postman,
    )


Service = Annotated[AuthService, Depends(get_service)]

# auto_error=False: a missing token must answer in our error shape, not FastAPI's.
_bearer = OAuth2PasswordBearer(tokenUrl="/v1/auth/login", auto_error=False)


def get_claims(state: State, token: Annotated[str | None, Depends(_bearer)]) -> Claims:
    if token is None:
        raise Unauthorized("not authenticated")
    return state.verifier.verify(token)


CurrentClaims = Annotated[Claims, Depends(get_claims)]


def get_client_address(request: Request, state: State) -> str | None:
    """The caller's IP: the peer's, or the one a trusted proxy (the gateway) forwarded.

    None when a trusted proxy names no client: counting the proxy's own address would let a
    few failed logins lock out everyone behind it.
    """
    peer = request.client.host if request.client else None
    forwarded_for = request.headers.get("x-forwarded-for")
    if not forwarded_for and is_trusted_proxy(peer, state.trusted_proxies):
        return None
    return client_address(peer, forwarded_for, state.trusted_proxies)


ClientAddress = Annotated[str | None, Depends(get_client_address)]


async def get_admin(claims: CurrentClaims, service: Service) -> User:
    """The calling user, if they are an admin now (asked of the database, not the token)."""
    return await service.require_admin(claims.user_id)


Admin = Annotated[User, Depends(get_admin)]
