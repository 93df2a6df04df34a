"""accounts the operator controls: verified addresses, admins, disabled users, limits, invites

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}


def utc_datetime() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    # batch_alter_table: SQLite cannot add a foreign-keyed or constrained column in place.
    with op.batch_alter_table("users") as users:
        users.add_column(
            sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        users.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        users.add_column(sa.Column("disabled_at", utc_datetime(), nullable=True))
        users.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
        users.add_column(sa.Column("storage_bytes", sa.BigInteger(), nullable=True))
        users.add_column(sa.Column("jobs_per_day", sa.Integer(), nullable=True))
    # Accounts from before this revision: the first one is the admin, as it would be now.
    op.execute(
        "UPDATE users SET is_admin = 1 WHERE id = "
        "(SELECT id FROM (SELECT id FROM users ORDER BY created_at, id LIMIT 1) AS first)"
    )
    op.create_table(
        "invites",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("expires_at", utc_datetime(), nullable=False),
        sa.Column("used_at", utc_datetime(), nullable=True),
        sa.Column("used_by", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_invites"),
        sa.UniqueConstraint("token_hash", name="uq_invites_token_hash"),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "mail_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("expires_at", utc_datetime(), nullable=False),
        sa.Column("used_at", utc_datetime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_mail_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_mail_tokens_token_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_mail_tokens_user_id_users",
            ondelete="CASCADE",
        ),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_mail_tokens_user_id", "mail_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_table("mail_tokens")
    op.drop_table("invites")
    with op.batch_alter_table("users") as users:
        for column in (
            "jobs_per_day",
            "storage_bytes",
            "max_active_jobs",
            "disabled_at",
            "is_admin",
            "email_verified",
        ):
            users.drop_column(column)
