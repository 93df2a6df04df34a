"""`video2mp3 admin create-user EMAIL [--admin]`: an account made by the operator.

Written straight into the user store (DATABASE_URL, else VAR_DIR's SQLite), so it works whatever
REGISTRATION says and whether or not auth is running. The operator vouches for the address: it
counts as verified. The password comes from VIDEO2MP3_PASSWORD, else it is asked for twice.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from services.auth import passwords
from services.auth.migrate import upgrade
from services.auth.models import User
from services.auth.repository import AuthRepository
from services.auth.service import normalise_email
from services.auth.state import ensure_sqlite_directory
from shared.errors import AppError
from shared.settings import Settings


async def create_user(settings: Settings, email: str, password: str, *, admin: bool) -> User:
    url = settings.resolved_database_url
    ensure_sqlite_directory(url)
    await upgrade(url)
    email = normalise_email(email)
    passwords.check_password_strength(password)
    password_hash = await passwords.hash_password(password)
    engine = create_async_engine(url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
            repository = AuthRepository(session)
            user_id = uuid.uuid4().hex
            first = await repository.claim_first_account(user_id)
            named = email in {normalise_email(e) for e in settings.admin_email_list}
            user = User(
                id=user_id,
                email=email,
                password_hash=password_hash,
                created_at=datetime.now(UTC),
                email_verified=True,
                is_admin=admin or first or named,
            )
            await repository.add_user(user)  # EmailTaken when the address has an account
            return user
    finally:
        await engine.dispose()


def _password() -> str:
    given = os.environ.get("VIDEO2MP3_PASSWORD")
    if given:
        return given
    first = getpass.getpass("password for the new account: ")
    if getpass.getpass("the same again: ") != first:
        raise SystemExit("video2mp3: the two passwords differ")
    return first


def create_user_command(email: str, admin: bool) -> int:
    password = _password()
    try:
        user = asyncio.run(create_user(Settings(), email, password, admin=admin))
    except AppError as exc:
        print(f"video2mp3: {exc.detail} ({exc.code})", file=sys.stderr)
        return 1
    role = "admin" if user.is_admin else "user"
    print(f"created {role} {user.email} ({user.id})")
    return 0
