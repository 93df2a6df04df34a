"""The migrations create the schema from nothing, and running them again changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from services.auth.migrate import upgrade
from tests.auth.conftest import fresh_database


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
    assert {"users", "refresh_tokens", "login_attempts", "alembic_version"} <= tables
    assert versions == ["0003"]
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
    assert versions == ["0003"]
