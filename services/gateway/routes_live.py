"""`WS /v1/ws`: a snapshot of the caller's active jobs, then their live events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from pydantic import BaseModel

from services.gateway.deps import (
    JobsReader,
    State,
    authenticate,
    key_still_valid,
    require_scopes,
)
from services.gateway.live import Subscriber
from services.gateway.state import GatewayState
from services.gateway.tickets import TICKET_SECONDS
from shared.apikeys import KEY_CACHE_SECONDS, Scope
from shared.errors import AppError, Unavailable
from shared.http import error_responses
from shared.mongo import DATABASE_OUTAGES
from shared.security import origin_allowed
from shared.tokens import Claims, bearer_token

router = APIRouter()


class Ticket(BaseModel):
    ticket: str
    expires_in: int


@router.post("/v1/ws-ticket", tags=["live"], responses=error_responses(401, 403))
async def ws_ticket(user: JobsReader, state: State) -> Ticket:
    """A single-use ticket for `WS /v1/ws?ticket=…`, valid for 30 seconds: browsers cannot send
    the token in a header, and a URL is logged where a token must not be."""
    return Ticket(ticket=await state.tickets.issue(user), expires_in=int(TICKET_SECONDS))


async def _authenticate(websocket: WebSocket, state: GatewayState) -> Claims | None:
    """The caller's claims, or None once the socket is closed: 1008 for a bad or missing token
    or ticket (the contract's code: the client refreshes it), 1013 while auth or the database
    cannot be asked (the credentials may be fine: the client retries later)."""
    ticket = websocket.query_params.get("ticket")
    token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get(
        "access_token"
    )
    try:
        if ticket is not None:
            user = await state.tickets.spend(ticket)
            if user is not None:
                return user
        elif token:
            claims = await authenticate(state, token)
            require_scopes(claims, [Scope.JOBS_READ])
            return claims
    except (Unavailable, *DATABASE_OUTAGES):
        await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER, reason="auth is unavailable")
        return None
    except AppError:
        pass
    await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid or missing token")
    return None


@router.websocket("/v1/ws")
async def live_events(websocket: WebSocket) -> None:
    state: GatewayState = websocket.app.state.gateway
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), state.settings.cors_origin_list):
        # Before accept this is an HTTP 403: a page from another site cannot ride the user's
        # token-bearing connection.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    # Accept first so that every client, browsers included, sees the close code.
    await websocket.accept()
    user = await _authenticate(websocket, state)
    if user is None:
        return
    most = state.settings.user_max_sockets
    if most and state.live.connections_of(user.user_id) >= most:
        # Per process: with N gateways an account holds at most N times this many.
        await websocket.close(
            code=status.WS_1013_TRY_AGAIN_LATER, reason="too many live connections"
        )
        return
    subscriber = state.live.subscribe(user.user_id)
    try:
        active = await state.jobs.list_active(user.user_id)
        await websocket.send_json({"type": "snapshot", "jobs": [j.public_view() for j in active]})
        sender = asyncio.create_task(_send_events(websocket, subscriber))
        # The token was checked once, at connect: the stream ends when the token does, as a
        # request with it would be refused from then on.
        deadline = asyncio.timeout(max(0.0, user.expires_at - time.time()))
        watcher = asyncio.create_task(_end_when_key_revoked(state, user, deadline))
        try:
            async with deadline:
                await _receive_until_closed(websocket)
        except TimeoutError:
            if not deadline.expired():
                raise
        finally:
            watcher.cancel()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await sender
        if deadline.expired():
            await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="token expired")
    except WebSocketDisconnect:
        pass
    finally:
        state.live.unsubscribe(user.user_id, subscriber)


async def _end_when_key_revoked(
    state: GatewayState, user: Claims, deadline: asyncio.Timeout
) -> None:
    """A socket opened with an API key ends (1008) within seconds of the key's revocation, as
    requests with it are refused."""
    if user.key_id is None:
        return
    while True:
        await asyncio.sleep(KEY_CACHE_SECONDS)
        try:
            valid = await key_still_valid(state, user)
        except (Unavailable, *DATABASE_OUTAGES):
            continue
        if not valid:
            deadline.reschedule(asyncio.get_running_loop().time())
            return


async def _send_events(websocket: WebSocket, subscriber: Subscriber) -> None:
    while True:
        await websocket.send_json(await subscriber.next())


async def _receive_until_closed(websocket: WebSocket) -> None:
    """Answer application-level pings, ignore anything else (binary frames included); raise
    WebSocketDisconnect when the client goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", status.WS_1000_NORMAL_CLOSURE))
        text = message.get("text")
        if text is not None and (text == "ping" or _is_ping(text)):
            await websocket.send_json({"type": "pong"})


def _is_ping(message: str) -> bool:
    try:
        parsed = json.loads(message)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("type") == "ping"
