"""Throwaway MariaDB databases: one per test session, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

import asyncmy

ADMIN_URL = os.environ.get("TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306")


async def _admin(sql: str) -> None:
    parts = urlsplit(ADMIN_URL)
    conn = await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        connect_timeout=10,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
    finally:
        conn.close()


async def create_database(prefix: str = "v2m") -> tuple[str, str]:
    """Create a fresh database; returns (name, SQLAlchemy async URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    return name, f"{ADMIN_URL.rstrip('/')}/{name}"


async def drop_database(name: str) -> None:
    await _admin(f"DROP DATABASE IF EXISTS `{name}`")
