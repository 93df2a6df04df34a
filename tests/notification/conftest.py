"""Fixtures of the notification tests: a mail catcher, a JWKS endpoint, the running service."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import jwt
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from jwt.algorithms import OKPAlgorithm

from services.notification.app import create_app
from services.notification.state import NotificationState
from shared.events import Event
from shared.messaging import EventPublisher
from shared.settings import Settings
from shared.tokens import JWKS_PATH
from shared.topology import Topology
from tests.support.amqp import delete_topology
from tests.support.asgi import serving
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher


@pytest.fixture
def smtp() -> Iterator[SmtpCatcher]:
    catcher = SmtpCatcher()
    catcher.start()
    try:
        yield catcher
    finally:
        catcher.stop()


@dataclass
class TokenIssuer:
    """Stands in for the auth service: signs access tokens and publishes its JWKS over HTTP."""

    key: Ed25519PrivateKey
    kid: str
    url: str
    issuer: str = "video2mp3-auth"
    audience: str = "video2mp3"

    def token(self, user_id: str, email: str | None = None, ttl: int = 300) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "email": email or f"{user_id}@example.com",
            "iat": now,
            "exp": now + ttl,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def headers(self, user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id)}"}


@pytest.fixture(scope="session")
async def token_issuer() -> AsyncIterator[TokenIssuer]:
    key = Ed25519PrivateKey.generate()
    kid = uuid.uuid4().hex[:12]
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg="EdDSA", use="sig")
    jwks_app = FastAPI()

    @jwks_app.get(JWKS_PATH)
    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    port = free_port()
    config = uvicorn.Config(
        jwks_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    async with serving(config):
        yield TokenIssuer(key, kid, f"http://127.0.0.1:{port}")


@pytest.fixture(autouse=True)
async def _delete_amqp_names(
    settings_factory: Callable[..., Settings], amqp_url: str
) -> AsyncIterator[None]:
    """Remove the test's queues and exchanges, so the shared broker does not fill up."""
    prefix = settings_factory().amqp_prefix
    yield
    await delete_topology(amqp_url, prefix)


@dataclass
class RunningService:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def state(self) -> NotificationState:
        state: NotificationState = self.app.state.notification
        return state


ServiceRunner = Callable[..., AbstractAsyncContextManager[RunningService]]


@pytest.fixture
def run_service() -> ServiceRunner:
    """`async with run_service(settings) as svc:` runs the app's lifespan (and its consumer)."""

    @asynccontextmanager
    async def run(settings: Settings, **options: Any) -> AsyncIterator[RunningService]:
        app = create_app(settings, **options)
        async with (
            LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://notification"
            ) as client,
        ):
            yield RunningService(app, client)

    return run


Publish = Callable[[Event], Awaitable[None]]


@pytest.fixture
async def publish(
    settings_factory: Callable[..., Settings], amqp_url: str
) -> AsyncIterator[Publish]:
    """Publishes events on the test's topology, as the converter would."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        publisher = await EventPublisher.open(connection, Topology(settings_factory().amqp_prefix))
        yield publisher.publish
    finally:
        await connection.close()
