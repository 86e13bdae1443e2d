"""Exactly one refresh token per user: the partial unique index.

Revision ID: 0002
Revises: 0001

Stops before changing anything while duplicates exist (``token-vault db dedupe`` removes
them). On PostgreSQL the index is built CONCURRENTLY, outside a transaction, so a live
table keeps taking writes; a build that fails leaves no invalid index behind.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from token_vault.errors import DuplicateRefreshTokensError

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "auth_vault_user_id_token_type_unique_idx"

COUNT_USERS_WITH_DUPLICATES = sa.text(
    "SELECT COUNT(*) FROM (SELECT user_id FROM auth_vault WHERE token_type = 'refresh' "
    "GROUP BY user_id HAVING COUNT(*) > 1) AS duplicated"
)


def _stop_if_duplicates() -> None:
    users = op.get_bind().execute(COUNT_USERS_WITH_DUPLICATES).scalar_one()
    if users:
        raise DuplicateRefreshTokensError(int(users))


def upgrade() -> None:
    _stop_if_duplicates()
    if op.get_bind().dialect.name != "postgresql":
        op.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON auth_vault (user_id, token_type) "
            "WHERE token_type = 'refresh'"
        )
        return
    with op.get_context().autocommit_block():
        # A CONCURRENTLY build that failed earlier leaves an invalid index: drop it first.
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c "
            f"ON c.oid = i.indexrelid WHERE c.relname = '{INDEX}' AND NOT i.indisvalid) "
            f"THEN DROP INDEX {INDEX}; END IF; END $$"
        )
        try:
            op.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
                "ON auth_vault (user_id, token_type) WHERE token_type = 'refresh'"
            )
        except sa.exc.IntegrityError:
            # A duplicate was written while the index was being built.
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
            _stop_if_duplicates()
            raise


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
