"""The vault's schema, as the CLI, dev mode and tests change it: Alembic migrations.

One door for everything above the vault: these are
:mod:`token_vault.storage.migrate`'s operations, each opening its own connection from a
:class:`~token_vault.DatabaseURL`.
"""

from __future__ import annotations

from token_vault.storage.migrate import (
    DuplicateEntry,
    check_duplicates,
    current_revision,
    dedupe,
    downgrade,
    head_revision,
    upgrade,
)

__all__ = [
    "DuplicateEntry",
    "check_duplicates",
    "current_revision",
    "dedupe",
    "downgrade",
    "head_revision",
    "upgrade",
]
