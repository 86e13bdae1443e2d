"""Alembic environment: migrations always run on a connection the caller holds."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "token-vault migrations run through `token-vault db ...` or "
        "token_vault.storage.migrate, which pass a connection"
    )

context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
