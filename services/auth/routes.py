"""The auth HTTP API: parse, call the service once, shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from services.auth.deps import ClientAddress, CurrentClaims, Service, State
from services.auth.schemas import (
    JwksResponse,
    LoginResponse,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
    UserResponse,
)
from services.auth.service import TokenPair
from shared.accounts import DEVICE_TOKEN_MAX_LENGTH

router = APIRouter(prefix="/v1/auth", tags=["auth"])
well_known = APIRouter(tags=["auth"])

JWKS_MAX_AGE = 300


def _token_response(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterRequest, service: Service, client_address: ClientAddress
) -> UserResponse:
    user = await service.register(body.email, body.password, client_address)
    return UserResponse.model_validate(user)


@router.post("/login")
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    service: Service,
    client_address: ClientAddress,
    device_token: Annotated[str | None, Form(max_length=DEVICE_TOKEN_MAX_LENGTH)] = None,
) -> LoginResponse:
    pair = await service.login(form.username, form.password, client_address, device_token)
    assert pair.device_token is not None  # a login always hands one out
    return LoginResponse(**_token_response(pair).model_dump(), device_token=pair.device_token)


@router.post("/refresh")
async def refresh(body: RefreshRequest, service: Service) -> TokenResponse:
    return _token_response(await service.refresh(body.refresh_token))


@router.get("/me")
async def me(claims: CurrentClaims, service: Service) -> UserResponse:
    return UserResponse.model_validate(await service.get_user(claims.user_id))


@well_known.get("/.well-known/jwks.json")
async def jwks(state: State, response: Response) -> JwksResponse:
    # Verifiers cache keys anyway; letting proxies cache them too is harmless (they are public).
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return JwksResponse.model_validate(state.signing_key.jwks())
