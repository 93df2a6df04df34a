"""`/v1/api-keys`: an account's API keys, managed with a login (a key cannot make keys)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.gateway.deps import CurrentUser, State
from shared.apikeys import ApiKeyCreate, ApiKeyCreated, ApiKeyList
from shared.http import error_responses

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.post("", status_code=201, responses=error_responses(401, 403))
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, state: State) -> ApiKeyCreated:
    """A new key, shown this once: only its hash is kept. Send it as `Authorization: Bearer`."""
    return await state.key_store.create(user.user_id, user.email, body)


@router.get("", responses=error_responses(401, 403))
async def list_api_keys(user: CurrentUser, state: State) -> ApiKeyList:
    """My keys, newest first: names, scopes and dates, never the keys themselves."""
    return ApiKeyList(items=await state.key_store.list_for_user(user.user_id))


@router.delete("/{key_id}", status_code=204, responses=error_responses(401, 403, 404))
async def revoke_api_key(key_id: str, user: CurrentUser, state: State) -> Response:
    """Revoke a key: every gateway refuses it within seconds."""
    await state.key_store.revoke(user.user_id, key_id)
    return Response(status_code=204)
