"""Offline access per client: an offline entry remembers the client it was issued to,
and a user holds at most one such entry per client (re-login replaces it in place).

Offline entries stored by the library's ``store()`` carry no client and stay as many as
the app wants.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "auth_vault_user_id_client_id_offline_idx"
PREDICATE = "token_type = 'offline' AND client_id IS NOT NULL"


def upgrade() -> None:
    op.add_column("auth_vault", sa.Column("client_id", sa.Text(), nullable=True))
    # No existing row has a client yet, so the index cannot meet a duplicate.
    op.create_index(
        INDEX,
        "auth_vault",
        ["user_id", "client_id"],
        unique=True,
        postgresql_where=sa.text(PREDICATE),
        sqlite_where=sa.text(PREDICATE),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="auth_vault")
    op.drop_column("auth_vault", "client_id")
