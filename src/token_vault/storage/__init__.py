"""Storage: the SQL the vault runs, per database, and its migrations.

Only :mod:`token_vault.vault` talks to this package: it opens a backend with
:func:`open_backend` and runs the few statements of
:class:`~token_vault.storage.record.Backend`.
"""

from __future__ import annotations

from token_vault.extra import require
from token_vault.storage.record import Backend
from token_vault.storage.url import DatabaseURL

__all__ = ["open_backend"]


async def open_backend(url: DatabaseURL, *, pool_size: int = 10) -> Backend:
    """Open the backend the URL names: PostgreSQL (asyncpg) or the SQLite file."""
    if url.is_sqlite:
        from token_vault.storage.sqlite import SQLiteBackend

        return await SQLiteBackend.connect(url)
    require("postgres", "a PostgreSQL database")
    from token_vault.storage.postgres import PostgresBackend

    return await PostgresBackend.connect(url, max_size=pool_size)
