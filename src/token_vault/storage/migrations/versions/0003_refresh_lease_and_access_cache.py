"""Refresh support: an encrypted access-token cache, a refresh lease, a re-login flag,
and the table of back-channel logout tokens already seen (replay protection).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TIME = sa.Text().with_variant(sa.DateTime(timezone=True), "postgresql")

_COLUMNS = (
    ("access_ciphertext", sa.LargeBinary()),
    ("access_nonce", sa.LargeBinary()),
    ("access_key_id", sa.Text()),
    ("access_expires_at", _TIME),
    ("lease_owner", sa.Text()),
    ("lease_expires_at", _TIME),
)


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.add_column("auth_vault", sa.Column(name, kind, nullable=True))
    op.add_column(
        "auth_vault",
        sa.Column("needs_reauth", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "auth_vault_seen_logout_token",
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="auth_vault_seen_logout_token_pkey"),
    )


def downgrade() -> None:
    op.drop_table("auth_vault_seen_logout_token")
    op.drop_column("auth_vault", "needs_reauth")
    for name, _ in reversed(_COLUMNS):
        op.drop_column("auth_vault", name)
