"""The ciphertext format per row: 1 binds user, token type and key id; 2 binds the entry
id too, so one offline entry's ciphertext cannot open in another of the same user.
Existing rows keep format 1 and still open; key rotation re-seals them to format 2.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "auth_vault",
        sa.Column("seal_version", sa.SmallInteger(), nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_column("auth_vault", "seal_version")
