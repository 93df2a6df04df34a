"""`/v1/auth/*`: forwarded to an auth instance, answered as auth answered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response

from services.gateway.deps import State
from services.gateway.schemas import RefreshRequest, RegisterRequest
from shared.accounts import (
    DEVICE_TOKEN_MAX_LENGTH,
    Account,
    LoginResponse,
    PasswordResetConfirm,
    PasswordResetRequest,
    TokenResponse,
    UserResponse,
    VerifyRequest,
)
from shared.errors import Unprocessable
from shared.http import error_responses

router = APIRouter(prefix="/v1/auth", tags=["auth"])

_PASSED_HEADERS = (
    "content-type",
    "content-length",
    "cache-control",
    "www-authenticate",
    "retry-after",
)


def _relay(upstream_status: int, headers: dict[str, str], body: bytes) -> Response:
    kept = {k: v for k, v in headers.items() if k.lower() in _PASSED_HEADERS[2:]}
    return Response(body, upstream_status, headers=kept, media_type=headers.get("content-type"))


async def _forward(state: State, method: str, path: str, **kwargs: Any) -> Response:
    upstream = await state.auth.request(method, path, **kwargs)
    return _relay(upstream.status_code, dict(upstream.headers), upstream.content)


def _forwarded_for(request: Request) -> dict[str, str]:
    """Append the address we saw, as any proxy does; auth decides whom to believe."""
    if request.client is None:
        return {}
    prior = request.headers.get("x-forwarded-for")
    peer = request.client.host
    return {"x-forwarded-for": f"{prior}, {peer}" if prior else peer}


@router.post(
    "/register",
    status_code=201,
    responses={201: {"model": UserResponse}, **error_responses(403, 409, 429)},
)
async def register(body: RegisterRequest, request: Request, state: State) -> Response:
    return await _forward(
        state,
        "POST",
        "/v1/auth/register",
        json=body.model_dump(),
        headers=_forwarded_for(request),
    )


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _sent_as_form(request: Request) -> None:
    """Runs before the form fields are read: a JSON login would otherwise be told only
    `username: Field required`, with no hint that the fields are right but the encoding is not."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in _FORM_TYPES:
        raise Unprocessable(
            "login takes a form (application/x-www-form-urlencoded), not JSON: "
            "fields `username` (the email) and `password`, optionally `device_token`"
        )


@router.post(
    "/login",
    responses={200: {"model": LoginResponse}, **error_responses(401, 403, 429)},
    dependencies=[Depends(_sent_as_form)],
)
async def login(
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    request: Request,
    state: State,
    device_token: Annotated[
        str | None,
        Form(max_length=DEVICE_TOKEN_MAX_LENGTH, description="from this client's last login"),
    ] = None,
) -> Response:
    form = {"username": username, "password": password, "grant_type": "password"}
    if device_token:
        form["device_token"] = device_token
    return await _forward(
        state, "POST", "/v1/auth/login", data=form, headers=_forwarded_for(request)
    )


@router.post("/refresh", responses={200: {"model": TokenResponse}, **error_responses(401, 403)})
async def refresh(body: RefreshRequest, state: State) -> Response:
    return await _forward(state, "POST", "/v1/auth/refresh", json=body.model_dump())


@router.get("/me", responses={200: {"model": Account}, **error_responses(401)})
async def me(request: Request, state: State) -> Response:
    auth = request.headers.get("authorization", "")
    return await _forward(state, "GET", "/v1/auth/me", headers={"authorization": auth})


@router.post("/verify", responses={200: {"model": Account}, **error_responses()})
async def verify(body: VerifyRequest, state: State) -> Response:
    """Prove an address with the token of its verification mail (`/#verify=<token>`)."""
    return await _forward(state, "POST", "/v1/auth/verify", json=body.model_dump())


@router.post("/verify/resend", status_code=202, responses=error_responses(401, 403, 409, 429))
async def resend_verification(request: Request, state: State) -> Response:
    """Mail the logged-in account's address a new verification link (409 if it is proven)."""
    auth = request.headers.get("authorization", "")
    return await _forward(state, "POST", "/v1/auth/verify/resend", headers={"authorization": auth})


@router.post("/password-reset", status_code=202, responses=error_responses())
async def password_reset(body: PasswordResetRequest, state: State) -> Response:
    """Mail a reset link if the address has an account: the answer is 202 either way."""
    return await _forward(state, "POST", "/v1/auth/password-reset", json=body.model_dump())


@router.post("/password-reset/confirm", status_code=204, responses=error_responses(403))
async def password_reset_confirm(body: PasswordResetConfirm, state: State) -> Response:
    """Set a new password with the token of a reset mail; every session of the account ends."""
    return await _forward(state, "POST", "/v1/auth/password-reset/confirm", json=body.model_dump())
