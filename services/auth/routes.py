"""The auth HTTP API: parse, call the service once, shape the answer."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from services.auth.deps import Admin, ClientAddress, CurrentClaims, Service, State
from services.auth.schemas import (
    Account,
    AccountPatch,
    AccountsResponse,
    InviteRequest,
    InviteResponse,
    JwksResponse,
    LoginResponse,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    TokenResponse,
    UserResponse,
    VerifyRequest,
)
from services.auth.service import AccountChanges, TokenPair, to_account
from shared.accounts import DEVICE_TOKEN_MAX_LENGTH

router = APIRouter(prefix="/v1/auth", tags=["auth"])
well_known = APIRouter(tags=["auth"])
admin = APIRouter(prefix="/v1/admin", tags=["admin"])
# Other services ask here what an account is now; the gateway forwards nothing under /internal/.
internal = APIRouter(prefix="/internal/v1", include_in_schema=False)

RESEND_ANSWER = {"detail": "a new link is on its way to your address"}
RESET_ANSWER = {"detail": "if an account has this address, a mail with a link is on its way"}

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
    user = await service.register(body.email, body.password, client_address, body.invite)
    return UserResponse.model_validate(user)


@router.post("/verify")
async def verify(body: VerifyRequest, service: Service) -> Account:
    return to_account(await service.verify_email(body.token))


@router.post("/verify/resend", status_code=status.HTTP_202_ACCEPTED)
async def resend_verification(claims: CurrentClaims, service: Service) -> dict[str, str]:
    await service.resend_verification(claims.user_id)
    return RESEND_ANSWER


@router.post("/password-reset", status_code=status.HTTP_202_ACCEPTED)
async def password_reset(body: PasswordResetRequest, service: Service) -> dict[str, str]:
    await service.request_password_reset(body.email)
    return RESET_ANSWER


@router.post("/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT)
async def password_reset_confirm(body: PasswordResetConfirm, service: Service) -> None:
    await service.confirm_password_reset(body.token, body.password)


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
async def me(claims: CurrentClaims, service: Service) -> Account:
    return to_account(await service.get_user(claims.user_id))


@internal.get("/accounts/{user_id}")
async def account(user_id: str, service: Service) -> Account:
    return await service.account(user_id)


@admin.get("/users")
async def list_users(
    caller: Admin, service: Service, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> AccountsResponse:
    return AccountsResponse(items=await service.list_accounts(limit))


@admin.patch("/users/{user_id}")
async def change_user(user_id: str, body: AccountPatch, caller: Admin, service: Service) -> Account:
    limits = body.limits
    changes = AccountChanges(
        disabled=body.disabled,
        admin=body.admin,
        limits=limits,
        limit_fields=frozenset(limits.model_fields_set) if limits is not None else frozenset(),
    )
    return await service.change_account(caller, user_id, changes)


@admin.post("/invites", status_code=status.HTTP_201_CREATED)
async def create_invite(body: InviteRequest, caller: Admin, service: Service) -> InviteResponse:
    token, expires_at = await service.create_invite(caller, timedelta(hours=body.expires_in_hours))
    return InviteResponse(invite=token, expires_at=expires_at)


@well_known.get("/.well-known/jwks.json")
async def jwks(state: State, response: Response) -> JwksResponse:
    # Verifiers cache keys anyway; letting proxies cache them too is harmless (they are public).
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return JwksResponse.model_validate(state.signing_key.jwks())
