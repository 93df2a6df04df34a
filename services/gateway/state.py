"""What the gateway's lifespan opens and every request uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from aio_pika.abc import AbstractRobustConnection
from pymongo import AsyncMongoClient

from services.gateway.balancer import Balancer
from services.gateway.live import LiveHub
from services.gateway.tickets import TicketStore
from shared.accounts import AccountDirectory
from shared.aio import KeyedLock
from shared.apikeys import ApiKeyStore, ApiKeyVerifier
from shared.blobstore import BlobStore
from shared.jobstore import JobStore, QuotaStore
from shared.media import MediaPool
from shared.messaging import EventPublisher
from shared.settings import Settings
from shared.tokens import JwksCache


@dataclass
class GatewayState:
    settings: Settings
    mongo: AsyncMongoClient[dict[str, Any]]
    jobs: JobStore
    quotas: QuotaStore
    tickets: TicketStore
    blobs: BlobStore
    amqp: AbstractRobustConnection
    publisher: EventPublisher
    http: httpx.AsyncClient
    auth: Balancer
    notifications: Balancer
    tokens: JwksCache
    live: LiveHub
    accounts: AccountDirectory
    key_store: ApiKeyStore
    api_keys: ApiKeyVerifier
    libav: MediaPool
    # Admissions of one account in this process wait their turn rather than race (quota.py).
    admissions: KeyedLock = field(default_factory=KeyedLock)
