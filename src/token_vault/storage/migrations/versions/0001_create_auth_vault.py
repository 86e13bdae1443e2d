"""Create the auth_vault table with its look-up indexes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# jsonb and timestamptz on PostgreSQL; JSON text and ISO 8601 text on SQLite.
_JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.Text().with_variant(sa.DateTime(timezone=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "auth_vault",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("token_type", sa.Text(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("session_state", sa.Text(), nullable=True),
        sa.Column("metadata", _JSON, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="auth_vault_pkey"),
        sa.CheckConstraint(
            "token_type IN ('refresh', 'offline')", name="auth_vault_token_type_check"
        ),
    )
    op.create_index("auth_vault_user_id_idx", "auth_vault", ["user_id", "token_type"])
    op.create_index("auth_vault_session_state_idx", "auth_vault", ["session_state"])


def downgrade() -> None:
    op.drop_index("auth_vault_session_state_idx", table_name="auth_vault")
    op.drop_index("auth_vault_user_id_idx", table_name="auth_vault")
    op.drop_table("auth_vault")
