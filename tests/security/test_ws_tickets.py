"""WS /v1/ws with single-use tickets, and the per-account cap on live sockets (real stack)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.cli.convert import Session, live_credentials
from services.gateway.tickets import TICKETS_COLLECTION
from shared.mongo import mongo_client
from tests.support.stack import Stack


def ws_base(stack: Stack) -> str:
    return stack.gateway_url.replace("http://", "ws://") + "/v1/ws"


async def ticket(stack: Stack, bearer: str) -> str:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        response = await client.post("/v1/ws-ticket", headers={"authorization": bearer})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] <= 30
    value: str = body["ticket"]
    return value


async def first_message(url: str) -> dict[str, object] | int:
    """The snapshot's type, or the close code the server answered with."""
    async with connect(url, open_timeout=15) as ws:
        try:
            raw = await asyncio.wait_for(ws.recv(), 15)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else -1
        message: dict[str, object] = json.loads(raw)
        return message


async def test_a_ticket_opens_one_socket_once(stack: Stack, bearer: str) -> None:
    value = await ticket(stack, bearer)
    opened = await first_message(f"{ws_base(stack)}?ticket={value}")
    assert isinstance(opened, dict)
    assert opened["type"] == "snapshot"
    # Spent: the same ticket again, or one never issued, is refused like a bad token.
    assert await first_message(f"{ws_base(stack)}?ticket={value}") == 1008
    assert await first_message(f"{ws_base(stack)}?ticket=made-up") == 1008
    assert await first_message(f"{ws_base(stack)}?ticket=") == 1008


async def test_a_stale_ticket_is_refused(stack: Stack, bearer: str) -> None:
    value = await ticket(stack, bearer)
    client = mongo_client(stack.env["MONGO_URL"])
    try:
        tickets = client[stack.env["MONGO_DB"]][TICKETS_COLLECTION]
        key = hashlib.sha256(value.encode()).hexdigest()
        changed = await tickets.update_one({"_id": key}, {"$set": {"valid_until": 0.0}})
        assert changed.matched_count == 1
    finally:
        await client.close()
    assert await first_message(f"{ws_base(stack)}?ticket={value}") == 1008


async def test_the_access_token_parameter_keeps_working(stack: Stack, bearer: str) -> None:
    token = bearer.removeprefix("Bearer ")
    opened = await first_message(f"{ws_base(stack)}?access_token={token}")
    assert isinstance(opened, dict)
    assert opened["type"] == "snapshot"


async def test_an_account_holds_at_most_user_max_sockets(stack: Stack, bearer: str) -> None:
    most = 10  # USER_MAX_SOCKETS's default
    async with contextlib.AsyncExitStack() as held:
        sockets: list[ClientConnection] = []
        for _ in range(most):
            ws = await held.enter_async_context(
                connect(ws_base(stack), additional_headers={"authorization": bearer})
            )
            await asyncio.wait_for(ws.recv(), 15)
            sockets.append(ws)
        assert await first_message(f"{ws_base(stack)}?ticket={await ticket(stack, bearer)}") == 1013
        await sockets.pop().close()
        await asyncio.sleep(0.5)
        opened = await first_message(f"{ws_base(stack)}?ticket={await ticket(stack, bearer)}")
    assert isinstance(opened, dict), opened


async def test_a_ticket_needs_a_login(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        response = await client.post("/v1/ws-ticket")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


async def test_the_cli_opens_its_socket_with_a_ticket(stack: Stack, bearer: str) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        session = Session(client, stack.gateway_url, bearer.removeprefix("Bearer "))
        url, headers = await live_credentials(session, ws_base(stack))
    assert "?ticket=" in url
    assert headers == {}
    opened = await first_message(url)
    assert isinstance(opened, dict)
    assert opened["type"] == "snapshot"
