"""The migrations create the schema from nothing, and running them again changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.auth.migrate import alembic_config, upgrade
from tests.auth.conftest import (
    fresh_database,
    is_admin,
    make_settings,
    new_email,
    register,
    running_auth,
)


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
async def test_upgrade_twice_is_idempotent(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        await upgrade(url)
        await upgrade(url)
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
                versions = (
                    (await connection.execute(text("SELECT version_num FROM alembic_version")))
                    .scalars()
                    .all()
                )
                email_unique = await connection.run_sync(
                    lambda c: inspect(c).get_unique_constraints("users")
                )
        finally:
            await engine.dispose()
    assert {
        "users",
        "refresh_tokens",
        "login_attempts",
        "first_account",
        "alembic_version",
    } <= tables
    assert versions == ["0004"]
    assert any(u["column_names"] == ["email"] for u in email_unique)


async def test_instances_starting_together_migrate_once(tmp_path: Path) -> None:
    """Three auth instances on one fresh MariaDB: the lock lets one migrate, the others wait."""
    async with fresh_database("mariadb", tmp_path) as url:
        await asyncio.gather(upgrade(url), upgrade(url), upgrade(url))
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                versions = (
                    (await connection.execute(text("SELECT version_num FROM alembic_version")))
                    .scalars()
                    .all()
                )
        finally:
            await engine.dispose()
    assert versions == ["0004"]


def upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
async def test_an_installation_with_accounts_keeps_its_first_admin(
    backend: str, tmp_path: Path
) -> None:
    async with fresh_database(backend, tmp_path) as url:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(upgrade_to("0003"))
                await connection.execute(
                    text(
                        "INSERT INTO users (id, email, password_hash, created_at, is_admin) "
                        "VALUES (:id, :email, 'x', :created_at, 1)"
                    ),
                    {"id": "a" * 32, "email": new_email(), "created_at": datetime(2026, 1, 1)},
                )
        finally:
            await engine.dispose()
        async with running_auth(make_settings(url, tmp_path / "var")) as client:
            newcomer = new_email()
            await register(client, newcomer)
            assert not await is_admin(client, newcomer)
