"""Each fault test gets a stack of its own: the faults (kill -9, outages) must not leak."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import register_and_login
from tests.support.amqp import delete_topology
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack, running_stack

StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def fault_stack(mongo_url: str, amqp_url: str, tmp_path: Path) -> StackFactory:
    @asynccontextmanager
    async def make(smtp_url: str, **overrides: str) -> AsyncIterator[Stack]:
        tag = uuid.uuid4().hex[:10]
        prefix = f"test-fault-{tag}"
        env = {
            "AMQP_URL": amqp_url,
            "AMQP_PREFIX": prefix,
            "MONGO_URL": mongo_url,
            "MONGO_DB": f"fault{tag}",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
            "SMTP_URL": smtp_url,
            "BLOB_STORE": "file",
            "VAR_DIR": str(tmp_path / "var"),
            "NETWORK_TIMEOUT": "3",
            **overrides,
        }
        try:
            with running_stack(env, tmp_path / "logs") as stack:
                yield stack
        finally:
            await delete_topology(amqp_url, prefix)

    return make


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCatcher]:
    async with SmtpCatcher() as catcher:
        yield catcher


@asynccontextmanager
async def client_and_user(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        yield client, await register_and_login(client)
