"""Webhook endpoints: registered, listed and removed here; delivered by the notification service.

The gateway serves these itself from MongoDB rather than proxying them to notification, so that
who may manage webhooks is decided where every other route's caller is (`WebhooksWriter`: a login,
or an API key with the `webhooks:write` scope).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator

from services.gateway.deps import State, WebhooksWriter
from shared.errors import NotFound
from shared.events import EventType
from shared.http import error_responses
from shared.jobs import utcnow
from shared.outbound import parse_allow_nets, resolve
from shared.webhooks import WEBHOOK_EVENTS, WebhookStore

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

MAX_URL_LENGTH = 2000


def webhook_store(state: State) -> WebhookStore:
    return WebhookStore(state.mongo[state.settings.mongo_db])


Hooks = Annotated[WebhookStore, Depends(webhook_store)]


class WebhookCreate(BaseModel):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    events: list[EventType] = Field(min_length=1, max_length=len(WEBHOOK_EVENTS))

    @field_validator("events")
    @classmethod
    def _job_events_only(cls, events: list[EventType]) -> list[EventType]:
        unknown = [str(e) for e in events if e not in WEBHOOK_EVENTS]
        if unknown:
            allowed = ", ".join(str(e) for e in WEBHOOK_EVENTS)
            raise ValueError(f"not a webhook event: {', '.join(unknown)} (use {allowed})")
        return list(dict.fromkeys(events))


class WebhookView(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str
    disabled: bool
    disabled_at: str | None
    disabled_reason: str | None


class WebhookCreated(WebhookView):
    secret: str = Field(description="the signing secret (`whsec_…`); shown only this once")


class WebhookList(BaseModel):
    items: list[WebhookView]


class DeliveryView(BaseModel):
    id: str
    type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    last_try: str | None
    next_try: str | None


class DeliveryList(BaseModel):
    items: list[DeliveryView]


@router.post("", status_code=201, responses=error_responses(401))
async def create_webhook(
    body: WebhookCreate, user: WebhooksWriter, state: State, hooks: Hooks
) -> WebhookCreated:
    """Register an endpoint for job events; the answer carries its signing secret once."""
    settings = state.settings
    # Refused now (422 url_forbidden) rather than at every delivery; each delivery checks again.
    await resolve(
        body.url, parse_allow_nets(settings.outbound_allow_nets), timeout=settings.network_timeout
    )
    endpoint = await hooks.create_endpoint(
        user.user_id, user.email, user.email_verified, body.url, body.events, utcnow()
    )
    return WebhookCreated(**endpoint.public_view(), secret=endpoint.secret)


@router.get("", responses=error_responses(401))
async def list_webhooks(user: WebhooksWriter, hooks: Hooks) -> WebhookList:
    endpoints = await hooks.list_for_user(user.user_id)
    return WebhookList(items=[WebhookView(**e.public_view()) for e in endpoints])


async def _owned(hooks: WebhookStore, endpoint_id: str, user_id: str) -> dict[str, Any]:
    endpoint = await hooks.get_owned(endpoint_id, user_id)
    if endpoint is None:
        raise NotFound("no such webhook")
    return endpoint.public_view()


@router.get("/{webhook_id}", responses=error_responses(401, 404))
async def get_webhook(webhook_id: str, user: WebhooksWriter, hooks: Hooks) -> WebhookView:
    return WebhookView(**await _owned(hooks, webhook_id, user.user_id))


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 404),
)
async def delete_webhook(webhook_id: str, user: WebhooksWriter, hooks: Hooks) -> Response:
    if not await hooks.delete_owned(webhook_id, user.user_id):
        raise NotFound("no such webhook")
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", responses=error_responses(401, 404))
async def list_deliveries(webhook_id: str, user: WebhooksWriter, hooks: Hooks) -> DeliveryList:
    """The endpoint's latest deliveries (at most 100), newest first."""
    await _owned(hooks, webhook_id, user.user_id)
    deliveries = await hooks.list_deliveries(webhook_id)
    return DeliveryList(items=[DeliveryView(**d.public_view()) for d in deliveries])


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    responses=error_responses(401, 404),
)
async def replay_delivery(
    webhook_id: str, delivery_id: str, user: WebhooksWriter, hooks: Hooks
) -> DeliveryView:
    """Send one delivery again now, with a new retry window; a disabled endpoint is enabled."""
    await _owned(hooks, webhook_id, user.user_id)
    delivery = await hooks.replay(webhook_id, delivery_id, utcnow())
    if delivery is None:
        raise NotFound("no such delivery")
    return DeliveryView(**delivery.public_view())
