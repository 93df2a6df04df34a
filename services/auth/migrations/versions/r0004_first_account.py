"""the first account's slot, so that racing sign-ups make one admin, not two

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "first_account",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("slot", name="pk_first_account"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    # An installation with accounts already has its first one.
    op.execute(
        "INSERT INTO first_account (slot, user_id) "
        "SELECT 1, id FROM users ORDER BY created_at, id LIMIT 1"
    )


def downgrade() -> None:
    op.drop_table("first_account")
