from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.amqp import delete_topology
from tests.support.mariadb import create_database, drop_database
from tests.support.smtp import SmtpCatcher
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="session")
async def smtp() -> AsyncIterator[SmtpCatcher]:
    catcher = SmtpCatcher()
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture(scope="session")
async def mariadb_url() -> AsyncIterator[str]:
    name, url = await create_database("v2m_e2e")
    yield url
    await drop_database(name)


@pytest.fixture(scope="session", params=["file", "gridfs"])
async def stack(
    request: pytest.FixtureRequest,
    mongo_url: str,
    amqp_url: str,
    mariadb_url: str,
    smtp: SmtpCatcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    backend: str = request.param
    tag = uuid.uuid4().hex[:10]
    var_dir: Path = tmp_path_factory.mktemp(f"stack-{backend}")
    prefix = f"test-e2e-{tag}"
    env = {
        "AMQP_URL": amqp_url,
        "AMQP_PREFIX": prefix,
        "MONGO_URL": mongo_url,
        "MONGO_DB": f"e2e{tag}",
        "DATABASE_URL": mariadb_url,
        "SMTP_URL": smtp.url,
        "BLOB_STORE": backend,
        "VAR_DIR": str(var_dir),
        "MAX_UPLOAD_BYTES": str(50 * 1024 * 1024),
    }
    with running_stack(env, var_dir / "logs") as running:
        running.env["VAR_DIR"] = str(var_dir)
        yield running
    await delete_topology(amqp_url, prefix)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        yield http


async def register_and_login(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery staple"
    response = await client.post("/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    response = await client.post("/v1/auth/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    tokens = response.json()
    return {"email": email, "authorization": f"Bearer {tokens['access_token']}", **tokens}


@pytest.fixture
async def user(client: httpx.AsyncClient) -> dict[str, str]:
    return await register_and_login(client)
