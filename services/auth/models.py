"""The user store's tables, as SQLAlchemy 2 typed declarative models.

Every string column has a length (MySQL needs one to create or index it) and every timestamp is
timezone-aware in Python and stored as UTC, because neither MySQL DATETIME nor SQLite keeps an
offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    false,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime in Python, a naive UTC one in the database (microseconds kept)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# utf8mb4 so that any email address fits; MariaDB's server default may be latin1.
MYSQL_TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    email_verified: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    is_admin: Mapped[bool] = mapped_column(Boolean(), default=False, server_default=false())
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # An admin's limits for this account; NULL: the installation's default (shared.accounts).
    max_active_jobs: Mapped[int | None] = mapped_column(Integer())
    storage_bytes: Mapped[int | None] = mapped_column(BigInteger())
    jobs_per_day: Mapped[int | None] = mapped_column(Integer())


class FirstAccount(Base):
    """One row at most: the account that signed up first, and so is an admin.

    Its fixed primary key makes the claim atomic: of sign-ups racing on a new installation, on one
    auth instance or several, one insert wins.
    """

    __tablename__ = "first_account"
    __table_args__ = MYSQL_TABLE_OPTIONS

    slot: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(String(32))


class RefreshToken(Base):
    """One refresh token, known only by its SHA-256; a family is every token from one login."""

    __tablename__ = "refresh_tokens"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class LoginAttempts(Base):
    """Login attempts counted in one fixed window, per account or per client address.

    `subject` is the SHA-256 of the normalised email (so no typed-in email is kept in clear) or
    the client's IP (an IPv6 client's /64). Rows are shared by every auth instance.
    """

    __tablename__ = "login_attempts"
    __table_args__ = MYSQL_TABLE_OPTIONS

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer())
    window_ends_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class Invite(Base):
    """A single-use invitation to register, known only by the SHA-256 of its token."""

    __tablename__ = "invites"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    used_by: Mapped[str | None] = mapped_column(String(32))


class MailToken(Base):
    """A token mailed to an address: proof of it (`verify`) or a way back in (`reset`)."""

    __tablename__ = "mail_tokens"
    __table_args__ = MYSQL_TABLE_OPTIONS

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # The address the token was mailed to: it proves that one, not whatever the account has now.
    email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
