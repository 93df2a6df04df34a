"""Auth fixtures: every API test runs once on MariaDB and once on SQLite.

MariaDB gets one throwaway database per test session (dropped at the end); tests stay apart by
using their own email addresses. Each test gets its own VAR_DIR, hence its own signing key.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.auth.app import create_app
from shared.settings import Settings
from tests.conftest import MARIADB_ADMIN_URL

PASSWORD = "correct horse battery"


@asynccontextmanager
async def mariadb_database() -> AsyncIterator[str]:
    """A new, empty MariaDB database for as long as the block runs."""
    name = f"v2m_auth_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield f"{MARIADB_ADMIN_URL}/{name}"
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await admin.dispose()


@asynccontextmanager
async def fresh_database(backend: str, directory: Path) -> AsyncIterator[str]:
    if backend == "mariadb":
        async with mariadb_database() as url:
            yield url
    else:
        yield f"sqlite+aiosqlite:///{directory / f'auth-{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(scope="session", params=["mariadb", "sqlite"])
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path_factory.mktemp("auth-db")) as url:
        yield url


def make_settings(database_url: str, var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "var_dir": var_dir,
        # Explicit, so that a developer's environment cannot leak a key into the tests.
        "jwt_private_key": None,
        "jwt_private_key_file": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "var")


@asynccontextmanager
async def running_auth(
    settings: Settings, peer: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """The auth app in-process; `peer` is the address its requests come from."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app, client=peer), base_url="http://auth.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_auth(settings) as client:
        yield client


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post("/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    user_id: str = response.json()["id"]
    return user_id


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/v1/auth/login", data={"username": email, "password": password})


async def is_admin(client: httpx.AsyncClient, email: str) -> bool:
    tokens = (await login(client, email)).json()
    me = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    admin: bool = me.json()["admin"]
    return admin
