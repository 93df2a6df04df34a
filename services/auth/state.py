"""What the auth app holds while it runs: made by `create_app`, opened by its lifespan."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.auth.keys import SigningKey
from services.auth.mail import Postman
from services.auth.migrate import upgrade
from services.auth.passwords import HashingLanes, prepare_dummy_hash
from services.auth.throttle import LoginThrottle, ThrottlePolicy
from shared.security import IPNetwork, parse_networks
from shared.settings import Settings
from shared.tokens import TokenVerifier


def ensure_sqlite_directory(database_url: str) -> None:
    """SQLite creates its file but not the directory around it (VAR_DIR on a first start).
    The file (emails, password hashes) is made owner-only; SQLite gives its journal and WAL
    files the database file's mode."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        path.chmod(0o600)


class AuthState:
    def __init__(self, settings: Settings, signing_key: SigningKey) -> None:
        self.settings = settings
        self.signing_key = signing_key
        # auth checks its own access tokens exactly the way every other service does.
        self.verifier = TokenVerifier(
            signing_key.jwks(), issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        self.trusted_proxies: list[IPNetwork] = parse_networks(settings.trusted_proxies)
        self.hashing = HashingLanes()
        self.postman = Postman(settings)
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._throttle: LoginThrottle | None = None

    async def open(self) -> None:
        url = self.settings.resolved_database_url
        await upgrade(url)
        await prepare_dummy_hash()
        self._engine = create_async_engine(url, pool_pre_ping=True)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._throttle = LoginThrottle(self._sessions, ThrottlePolicy.from_settings(self.settings))
        self.postman.start()

    async def close(self) -> None:
        await self.postman.stop()
        self.hashing.close()
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None
        self._sessions = None
        self._throttle = None

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("the auth database is not open (is the app's lifespan running?)")
        return self._sessions

    @property
    def throttle(self) -> LoginThrottle:
        if self._throttle is None:
            raise RuntimeError("the auth database is not open (is the app's lifespan running?)")
        return self._throttle

    async def ping_database(self) -> None:
        if self._engine is None:
            raise RuntimeError("the auth database is not open")
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
