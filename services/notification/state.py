"""What the notification service's lifespan opens and its requests and consumer use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from aio_pika.abc import AbstractRobustConnection
from pymongo import AsyncMongoClient

from services.notification.service import NotificationService
from services.notification.store import NotificationStore
from shared.apikeys import ApiKeyVerifier
from shared.messaging import Consumer
from shared.settings import Settings
from shared.tokens import JwksCache


@dataclass
class NotificationState:
    settings: Settings
    mongo: AsyncMongoClient[dict[str, Any]]
    store: NotificationStore
    service: NotificationService
    http: httpx.AsyncClient
    tokens: JwksCache
    api_keys: ApiKeyVerifier
    amqp: AbstractRobustConnection
    consumer: Consumer
