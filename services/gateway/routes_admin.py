"""`/v1/admin/*`: the operator's controls, answered by auth (which decides who is an admin).

The gateway adds what only it knows: each user's usage beside their account, and, when an
account is disabled, the cancellation of its active jobs.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.gateway.deps import State
from services.gateway.quota import Usage, usage_of
from services.gateway.service import cancel_or_delete
from services.gateway.state import GatewayState
from shared.accounts import Account, AccountPatch, InviteRequest, InviteResponse
from shared.errors import AppError, ErrorCode, Forbidden, NotFound, Unavailable
from shared.http import error_responses
from shared.tokens import Claims

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_USER_ID = re.compile(r"[0-9a-f]{32}")


class AccountWithUsage(Account):
    usage: Usage | None
    """None when the usage could not be read just now."""


class AdminUsers(BaseModel):
    items: list[AccountWithUsage]


async def require_active_owner(state: GatewayState, user_id: str) -> None:
    """Refuse a link of a disabled account's job (403 `account_disabled`). With auth out of
    reach the link works: it was signed by us, and a download must not depend on auth."""
    try:
        account = await state.accounts.get(user_id)
    except Unavailable:
        return
    if account is not None and account.disabled:
        raise Forbidden("this account is disabled", code=ErrorCode.ACCOUNT_DISABLED)


def _authorization(request: Request) -> dict[str, str]:
    return {"authorization": request.headers.get("authorization", "")}


def _relay(upstream_status: int, content: bytes, content_type: str | None) -> Response:
    return Response(content, upstream_status, media_type=content_type)


@router.get("/users", responses={200: {"model": AdminUsers}, **error_responses(401, 403)})
async def list_users(
    request: Request, state: State, limit: Annotated[int, Query(ge=1, le=1000)] = 500
) -> Response:
    """Every account (oldest first) with its usage and limits."""
    upstream = await state.auth.request(
        "GET", "/v1/admin/users", headers=_authorization(request), params={"limit": limit}
    )
    if upstream.status_code != 200:
        return _relay(upstream.status_code, upstream.content, upstream.headers.get("content-type"))
    items: list[dict[str, Any]] = []
    for raw in upstream.json()["items"]:
        account = Account.model_validate(raw)
        items.append({**account.model_dump(mode="json"), "usage": await _usage(state, account)})
    return JSONResponse({"items": items})


async def _usage(state: GatewayState, account: Account) -> dict[str, Any] | None:
    try:
        return (await usage_of(state, account.id)).model_dump()
    except AppError as exc:
        log.warning("usage of %s unknown: %s", account.id, exc.detail)
        return None


@router.patch(
    "/users/{user_id}", responses={200: {"model": Account}, **error_responses(401, 403, 404)}
)
async def change_user(user_id: str, body: AccountPatch, request: Request, state: State) -> Response:
    """Disable or enable an account, make it an admin or not, set its limits (null: default).

    A disabled account cannot log in or refresh (403 `account_disabled`), its access tokens
    expire within ACCESS_TOKEN_TTL, its download links stop at once and its active jobs are
    cancelled."""
    if not _USER_ID.fullmatch(user_id):
        raise NotFound("no such account")
    upstream = await state.auth.request(
        "PATCH",
        f"/v1/admin/users/{user_id}",
        headers=_authorization(request),
        json=body.model_dump(exclude_unset=True),
    )
    if upstream.status_code == 200:
        state.accounts.forget(user_id)
        account = Account.model_validate_json(upstream.content)
        if account.disabled:
            await _cancel_active_jobs(state, account)
    return _relay(upstream.status_code, upstream.content, upstream.headers.get("content-type"))


async def _cancel_active_jobs(state: GatewayState, account: Account) -> None:
    owner = Claims(user_id=account.id, email=account.email)
    for job in await state.jobs.list_active(account.id, limit=10_000):
        try:
            await cancel_or_delete(state, owner, job.id)
        except AppError as exc:  # finished or gone meanwhile: nothing left to cancel
            log.info("job %s of disabled %s not cancelled: %s", job.id, account.id, exc.detail)


@router.post(
    "/invites",
    status_code=201,
    responses={201: {"model": InviteResponse}, **error_responses(401, 403)},
)
async def create_invite(body: InviteRequest, request: Request, state: State) -> Response:
    """A single-use invite to register (`{email, password, invite}`) before it expires."""
    upstream = await state.auth.request(
        "POST", "/v1/admin/invites", headers=_authorization(request), json=body.model_dump()
    )
    return _relay(upstream.status_code, upstream.content, upstream.headers.get("content-type"))
