"""Bring the user store's schema up to date, programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


# Several auth instances may start at once on a fresh database; one migrates, the others wait.
MIGRATION_LOCK = "video2mp3-migrations"
MIGRATION_LOCK_SECONDS = 120


def _upgrade_on(connection: Connection, config: Config) -> None:
    # env.py picks the connection up from here instead of building its own engine; the URL never
    # goes through the config file parser, so passwords with '%' in them need no escaping.
    config.attributes["connection"] = connection
    if connection.dialect.name not in ("mysql", "mariadb"):
        command.upgrade(config, "head")  # SQLite: one file, one process (the embedded default)
        return
    got = connection.execute(
        text("SELECT GET_LOCK(:name, :wait)"),
        {"name": MIGRATION_LOCK, "wait": MIGRATION_LOCK_SECONDS},
    ).scalar()
    if got != 1:
        raise RuntimeError("another instance held the migration lock for too long")
    try:
        command.upgrade(config, "head")
    finally:
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": MIGRATION_LOCK})


async def upgrade(database_url: str) -> None:
    """Run `alembic upgrade head` on the database; a no-op when it is already current."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_on, alembic_config())
    finally:
        await engine.dispose()
