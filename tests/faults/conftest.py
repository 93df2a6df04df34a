"""Each fault test gets a stack of its own: the faults (kill -9, outages) must not leak."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.e2e.conftest import register_and_login
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpCatcher]:
    async with SmtpCatcher() as catcher:
        yield catcher


@asynccontextmanager
async def client_and_user(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        yield client, await register_and_login(client)
