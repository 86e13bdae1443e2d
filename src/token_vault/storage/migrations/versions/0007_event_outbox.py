"""Events to the app: an outbox of webhook events written with the change they describe,
and a log of every delivery attempt. Never a token.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TIME = sa.Text().with_variant(sa.DateTime(timezone=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_vault_event",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=True),
        sa.Column("token_type", sa.Text(), nullable=True),
        sa.Column("occurred_at", _TIME, nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _TIME, nullable=False),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", _TIME, nullable=True),
        sa.Column("delivered_at", _TIME, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="auth_vault_event_pkey"),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name="auth_vault_event_state_check"
        ),
    )
    op.create_index("auth_vault_event_state_idx", "auth_vault_event", ["state", "next_attempt_at"])
    op.create_index("auth_vault_event_occurred_at_idx", "auth_vault_event", ["occurred_at"])
    op.create_table(
        "auth_vault_event_delivery",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("worker", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="auth_vault_event_delivery_pkey"),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["auth_vault_event.id"],
            name="auth_vault_event_delivery_event_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "auth_vault_event_delivery_event_id_idx",
        "auth_vault_event_delivery",
        ["event_id", "id"],
    )


def downgrade() -> None:
    op.drop_table("auth_vault_event_delivery")
    op.drop_table("auth_vault_event")
