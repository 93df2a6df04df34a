"""Webhook endpoints and their deliveries: the documents, the signature, every MongoDB query.

The gateway manages endpoints (so that who may do so is decided where every other request is
authenticated); the notification service turns job events into deliveries and sends them.
Deliveries follow the Standard Webhooks specification: `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed by the `whsec_` secret.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import EventType

ENDPOINTS_COLLECTION = "webhooks"
DELIVERIES_COLLECTION = "webhook_deliveries"
SECRET_PREFIX = "whsec_"
LIST_LIMIT = 100

# The job events an endpoint may subscribe to.
WEBHOOK_EVENTS: tuple[EventType, ...] = (
    EventType.JOB_STARTED,
    EventType.JOB_COMPLETED,
    EventType.JOB_FAILED,
    EventType.JOB_CANCELLED,
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Not accepted within WEBHOOK_RETRY_WINDOW (or its endpoint is gone); replay sends it again.
    FAILED = "failed"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_id(endpoint_id: str, event_id: str) -> str:
    """One delivery per endpoint per event, whatever redeliveries of the event do."""
    digest = hashlib.sha256(f"{endpoint_id}:{event_id}".encode()).hexdigest()[:26]
    return f"msg_{digest}"


class _Document(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        # Times are stored in UTC; a store that hands them back naive still means UTC.
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Endpoint(_Document):
    id: str = Field(alias="_id")
    user_id: str
    user_email: str
    # The owner is mailed (when the endpoint is disabled) only at a proven address.
    user_email_verified: bool = False
    url: str
    events: list[EventType]
    secret: str
    created_at: datetime
    # When the current streak of failures began (None while deliveries succeed).
    failing_since: datetime | None = None
    last_success: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": [str(e) for e in self.events],
            "created_at": self.created_at.isoformat(),
            "disabled": self.disabled_at is not None,
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
            "disabled_reason": self.disabled_reason,
        }


class Delivery(_Document):
    id: str = Field(alias="_id")
    endpoint_id: str
    user_id: str
    event_id: str
    type: EventType
    # The exact bytes signed and sent, the same for every attempt.
    body: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime
    # Retries stop WEBHOOK_RETRY_WINDOW after this (its creation, or its last replay).
    retry_from: datetime
    next_try: datetime | None = None
    last_try: datetime | None = None

    def public_view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": str(self.type),
            "status": str(self.status),
            "attempts": self.attempts,
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "last_try": self.last_try.isoformat() if self.last_try else None,
            "next_try": (
                self.next_try.isoformat()
                if self.next_try and self.status is DeliveryStatus.PENDING
                else None
            ),
        }


class WebhookStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._endpoints: AsyncCollection[dict[str, Any]] = db[ENDPOINTS_COLLECTION]
        self._deliveries: AsyncCollection[dict[str, Any]] = db[DELIVERIES_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._endpoints.create_index([("user_id", ASCENDING)], name="owner")
        await self._deliveries.create_index(
            [("status", ASCENDING), ("next_try", ASCENDING)], name="due"
        )
        await self._deliveries.create_index(
            [("endpoint_id", ASCENDING), ("created_at", DESCENDING)], name="endpoint_newest"
        )

    async def create_endpoint(
        self,
        user_id: str,
        user_email: str,
        user_email_verified: bool,
        url: str,
        events: list[EventType],
        now: datetime,
    ) -> Endpoint:
        endpoint = Endpoint(
            id=f"wh_{uuid.uuid4().hex}",
            user_id=user_id,
            user_email=user_email,
            user_email_verified=user_email_verified,
            url=url,
            events=events,
            secret=new_secret(),
            created_at=now,
        )
        await self._endpoints.insert_one(endpoint.model_dump(by_alias=True, mode="python"))
        return endpoint

    async def get_owned(self, endpoint_id: str, user_id: str) -> Endpoint | None:
        doc = await self._endpoints.find_one({"_id": endpoint_id, "user_id": user_id})
        return _endpoint(doc)

    async def get(self, endpoint_id: str) -> Endpoint | None:
        return _endpoint(await self._endpoints.find_one({"_id": endpoint_id}))

    async def list_for_user(self, user_id: str) -> list[Endpoint]:
        cursor = self._endpoints.find({"user_id": user_id}).sort("created_at", DESCENDING)
        return [e for d in [doc async for doc in cursor] if (e := _endpoint(d)) is not None]

    async def delete_owned(self, endpoint_id: str, user_id: str) -> bool:
        result = await self._endpoints.delete_one({"_id": endpoint_id, "user_id": user_id})
        if result.deleted_count:
            await self._deliveries.delete_many({"endpoint_id": endpoint_id})
        return bool(result.deleted_count)

    async def subscribed(self, user_id: str, event_type: EventType) -> list[Endpoint]:
        cursor = self._endpoints.find(
            {"user_id": user_id, "events": str(event_type), "disabled_at": None}
        )
        return [e for d in [doc async for doc in cursor] if (e := _endpoint(d)) is not None]

    async def add_delivery(self, delivery: Delivery) -> None:
        """Store a delivery unless this endpoint already has the one for this event."""
        with contextlib.suppress(DuplicateKeyError):
            await self._deliveries.insert_one(delivery.model_dump(by_alias=True, mode="python"))

    async def claim_due(self, now: datetime, lease_until: datetime) -> Delivery | None:
        """Take the next due delivery, holding it until `lease_until`: a sender that dies
        leaves it due again then, so a restart loses nothing."""
        doc = await self._deliveries.find_one_and_update(
            {"status": str(DeliveryStatus.PENDING), "next_try": {"$lte": now}},
            {"$set": {"next_try": lease_until}},
            sort=[("next_try", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return _delivery(doc)

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: DeliveryStatus,
        now: datetime,
        next_try: datetime | None,
        status_code: int | None,
        error: str | None,
    ) -> None:
        await self._deliveries.update_one(
            {"_id": delivery_id},
            {
                "$set": {
                    "status": str(status),
                    "next_try": next_try,
                    "last_try": now,
                    "last_status_code": status_code,
                    "last_error": error,
                },
                "$inc": {"attempts": 1},
            },
        )

    async def fail_pending(self, endpoint_id: str, reason: str) -> None:
        await self._deliveries.update_many(
            {"endpoint_id": endpoint_id, "status": str(DeliveryStatus.PENDING)},
            {"$set": {"status": str(DeliveryStatus.FAILED), "last_error": reason}},
        )

    async def list_deliveries(self, endpoint_id: str) -> list[Delivery]:
        cursor = (
            self._deliveries.find({"endpoint_id": endpoint_id})
            .sort("created_at", DESCENDING)
            .limit(LIST_LIMIT)
        )
        return [d for doc in [x async for x in cursor] if (d := _delivery(doc)) is not None]

    async def replay(self, endpoint_id: str, delivery_id: str, now: datetime) -> Delivery | None:
        """Send a delivery again now, with a fresh retry window; re-enables its endpoint, since
        asking for a replay says the receiver is fixed."""
        doc = await self._deliveries.find_one_and_update(
            {"_id": delivery_id, "endpoint_id": endpoint_id},
            {
                "$set": {
                    "status": str(DeliveryStatus.PENDING),
                    "next_try": now,
                    "retry_from": now,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            await self._endpoints.update_one(
                {"_id": endpoint_id},
                {"$set": {"disabled_at": None, "disabled_reason": None, "failing_since": None}},
            )
        return _delivery(doc)

    async def mark_healthy(self, endpoint_id: str, now: datetime) -> None:
        await self._endpoints.update_one(
            {"_id": endpoint_id}, {"$set": {"failing_since": None, "last_success": now}}
        )

    async def mark_failing(self, endpoint_id: str, since: datetime) -> Endpoint | None:
        """Note a failing delivery due since `since`: the streak starts then, or at the last
        success if that came later. Returns the endpoint as it is now."""
        current = await self.get(endpoint_id)
        if current is None or current.failing_since is not None:
            return current
        if current.last_success is not None and current.last_success > since:
            since = current.last_success
        await self._endpoints.update_one(
            {"_id": endpoint_id, "failing_since": None}, {"$set": {"failing_since": since}}
        )
        return await self.get(endpoint_id)

    async def disable(self, endpoint_id: str, now: datetime, reason: str) -> bool:
        """Disable a failing endpoint; True for the one caller that did (and so tells the owner)."""
        result = await self._endpoints.update_one(
            {"_id": endpoint_id, "disabled_at": None},
            {"$set": {"disabled_at": now, "disabled_reason": reason}},
        )
        if result.modified_count:
            await self.fail_pending(endpoint_id, "the endpoint was disabled")
        return bool(result.modified_count)


def _endpoint(doc: dict[str, Any] | None) -> Endpoint | None:
    if doc is None:
        return None
    return Endpoint.model_validate(doc)


def _delivery(doc: dict[str, Any] | None) -> Delivery | None:
    if doc is None:
        return None
    return Delivery.model_validate(doc)
