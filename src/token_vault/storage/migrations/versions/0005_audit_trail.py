"""The audit trail: one row per token handed out, refresh, write, delete, sign-in,
sign-out, logout, revocation and key rotation. Never a token.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TIME = sa.Text().with_variant(sa.DateTime(timezone=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_vault_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("caller", sa.Text(), nullable=True),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("entry_id", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("client_address", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="auth_vault_audit_pkey"),
    )
    op.create_index("auth_vault_audit_at_idx", "auth_vault_audit", ["at"])
    op.create_index("auth_vault_audit_user_id_idx", "auth_vault_audit", ["user_id", "at"])
    op.create_index("auth_vault_audit_caller_idx", "auth_vault_audit", ["caller", "at"])


def downgrade() -> None:
    op.drop_table("auth_vault_audit")
