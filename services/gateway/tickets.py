"""Single-use WebSocket tickets: `POST /v1/ws-ticket` hands one out, `WS /v1/ws?ticket=` spends it.

A browser cannot set headers on a WebSocket, and a token in the URL ends up in proxy logs and
browser history. A ticket in the URL is harmless there: it lives TICKET_SECONDS, works once, and
only for the live stream. Tickets are kept in MongoDB (hashed), so any gateway replica can
accept one that another handed out.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.tokens import Claims

TICKETS_COLLECTION = "ws_tickets"
TICKET_SECONDS = 30.0


def _key(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class TicketStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._tickets = db[TICKETS_COLLECTION]

    async def issue(self, user: Claims) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.time()
        # Spent or not, old tickets go: a client that never connects leaves one behind.
        await self._tickets.delete_many({"valid_until": {"$lt": now}})
        await self._tickets.insert_one(
            {
                "_id": _key(ticket),
                "user_id": user.user_id,
                "email": user.email,
                "token_expires_at": user.expires_at,
                "valid_until": min(now + TICKET_SECONDS, user.expires_at or now + TICKET_SECONDS),
                # A socket opened with a key's ticket must end when the key is revoked.
                "key_id": user.key_id,
                "scopes": None if user.scopes is None else sorted(user.scopes),
            }
        )
        return ticket

    async def spend(self, ticket: str) -> Claims | None:
        """The claims the ticket was issued for, once; None when unknown, spent or stale."""
        if not ticket or len(ticket) > 128:
            return None
        doc = await self._tickets.find_one_and_delete({"_id": _key(ticket)})
        if doc is None or float(doc["valid_until"]) < time.time():
            return None
        scopes = doc.get("scopes")
        return Claims(
            user_id=doc["user_id"],
            email=doc["email"],
            expires_at=float(doc["token_expires_at"]),
            key_id=doc.get("key_id"),
            scopes=None if scopes is None else frozenset(scopes),
        )
