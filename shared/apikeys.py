"""API keys: long-lived credentials for scripts and servers, each limited to a few scopes.

A key is `v2m_` and 256 random bits. Only its SHA-256 is stored (MongoDB, `api_keys`): a fast
hash is enough for a secret nobody can guess, and a slow one (Argon2) would cost every request.
Every service that takes keys reads that collection itself, so a key costs no call to auth, and
remembers each verification KEY_CACHE_SECONDS: a revoked key stops working within that long on
every process, and `last_used_at` is written at most once per key, process and period.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymongo import DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from shared.errors import AppError, ErrorCode, NotFound
from shared.jobs import utcnow

KEY_PREFIX = "v2m_"
API_KEYS_COLLECTION = "api_keys"
# Short enough that a revocation takes effect within seconds everywhere, long enough that a busy
# key costs one database read (and write) per period instead of one per request.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 4096
# A WebSocket opened with a key ends after this long (1008, as when a token expires): the
# client reconnects, and a key revoked meanwhile is then refused.
KEY_SOCKET_SECONDS = 3600.0
MAX_KEYS_PER_USER = 100
_MAX_KEY_LENGTH = 128


class Scope(StrEnum):
    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    WEBHOOKS_WRITE = "webhooks:write"


_SCOPE_NAMES = frozenset(str(s) for s in Scope)


class InsufficientScope(AppError):
    status_code = 403
    code = ErrorCode.INSUFFICIENT_SCOPE


class ApiKeyCreate(BaseModel):
    """`POST /v1/api-keys`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))


class ApiKeyInfo(BaseModel):
    """A key as listed: never the key itself."""

    id: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None = None


class ApiKeyList(BaseModel):
    items: list[ApiKeyInfo]


class ApiKeyCreated(ApiKeyInfo):
    key: str
    """The key itself, shown this once."""


class ApiKeyOwner(BaseModel):
    """Whom a verified key speaks for, and what it may do."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    user_id: str
    email: str
    scopes: frozenset[Scope]


def looks_like_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _info(doc: dict[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=doc["_id"],
        name=doc["name"],
        scopes=doc["scopes"],
        created_at=doc["created_at"],
        last_used_at=doc.get("last_used_at"),
    )


class ApiKeyStore:
    """Every MongoDB query on API keys."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._keys = db[API_KEYS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self._keys.create_index([("key_hash", 1)], unique=True)
        await self._keys.create_index([("user_id", 1), ("created_at", DESCENDING)])

    async def create(self, user_id: str, email: str, body: ApiKeyCreate) -> ApiKeyCreated:
        if await self._keys.count_documents({"user_id": user_id}) >= MAX_KEYS_PER_USER:
            raise AppError(
                f"at most {MAX_KEYS_PER_USER} keys per account: revoke one first",
                code=ErrorCode.INVALID_REQUEST,
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        scopes = sorted(set(body.scopes))
        now = utcnow()
        doc: dict[str, Any] = {
            "_id": uuid.uuid4().hex,
            "user_id": user_id,
            "email": email,
            "name": body.name,
            "scopes": [str(s) for s in scopes],
            "key_hash": hash_key(key),
            # MongoDB keeps milliseconds: the answer shows what a listing will.
            "created_at": now.replace(microsecond=now.microsecond // 1000 * 1000),
            "last_used_at": None,
        }
        await self._keys.insert_one(doc)
        return ApiKeyCreated(**_info(doc).model_dump(), key=key)

    async def list_for_user(self, user_id: str) -> list[ApiKeyInfo]:
        cursor = self._keys.find({"user_id": user_id}).sort("created_at", DESCENDING)
        return [_info(doc) async for doc in cursor]

    async def revoke(self, user_id: str, key_id: str) -> None:
        """Delete the key; another user's key is as missing as one that never was."""
        result = await self._keys.delete_one({"_id": key_id, "user_id": user_id})
        if result.deleted_count != 1:
            raise NotFound("no such API key")

    async def exists(self, key_id: str) -> bool:
        return await self._keys.count_documents({"_id": key_id}, limit=1) == 1

    async def use(self, key: str) -> ApiKeyOwner | None:
        """The key's owner, stamping `last_used_at`; None for no such key."""
        doc = await self._keys.find_one_and_update(
            {"key_hash": hash_key(key)},
            {"$set": {"last_used_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return ApiKeyOwner(
            key_id=doc["_id"],
            user_id=doc["user_id"],
            email=doc["email"],
            scopes=frozenset(Scope(s) for s in doc["scopes"] if s in _SCOPE_NAMES),
        )


class ApiKeyVerifier:
    """Keys checked against the store, each answer remembered KEY_CACHE_SECONDS."""

    def __init__(self, store: ApiKeyStore, *, ttl: float = KEY_CACHE_SECONDS) -> None:
        self._store = store
        self._ttl = ttl
        # By the key's hash, so that no plaintext key stays in memory longer than its request.
        self._known: dict[str, tuple[float, ApiKeyOwner]] = {}

    async def verify(self, key: str) -> ApiKeyOwner | None:
        if len(key) > _MAX_KEY_LENGTH:
            return None
        digest = hash_key(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and now - known[0] < self._ttl:
            return known[1]
        owner = await self._store.use(key)
        self._known.pop(digest, None)
        if owner is None:
            return None
        if len(self._known) >= KEY_CACHE_SIZE:
            self._known.pop(next(iter(self._known)))
        self._known[digest] = (now, owner)
        return owner
