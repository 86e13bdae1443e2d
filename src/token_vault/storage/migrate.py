"""Schema management: upgrade, downgrade, current, dedupe, check.

One code path for the CLI, the service and the tests: every function opens a connection
from a :class:`DatabaseURL` (or takes one the caller holds) and runs Alembic on it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from token_vault.errors import MigrationError, UnavailableError
from token_vault.extra import require
from token_vault.storage.url import DatabaseURL

__all__ = [
    "DuplicateEntry",
    "check_duplicates",
    "current_revision",
    "dedupe",
    "downgrade",
    "head_revision",
    "upgrade",
]

T = TypeVar("T")

_SCRIPT_LOCATION = str(Path(__file__).parent / "migrations")

_DUPLICATES = """
WITH ranked AS (
  SELECT id, user_id,
         ROW_NUMBER() OVER (PARTITION BY user_id
                            ORDER BY updated_at DESC, created_at DESC, id DESC) AS rn
  FROM auth_vault
  WHERE token_type = 'refresh'
)
"""
SELECT_DUPLICATES = _DUPLICATES + "SELECT id, user_id FROM ranked WHERE rn > 1 ORDER BY user_id, id"
DELETE_DUPLICATES = (
    _DUPLICATES + "DELETE FROM auth_vault WHERE id IN (SELECT id FROM ranked WHERE rn > 1) "
    "RETURNING id, user_id"
)
# The seed's verification query: users holding more than one refresh token.
USERS_WITH_DUPLICATES = """
SELECT user_id, COUNT(*) AS count
FROM auth_vault
WHERE token_type = 'refresh'
GROUP BY user_id
HAVING COUNT(*) > 1
ORDER BY user_id
"""


@dataclass(frozen=True, slots=True, order=True)
class DuplicateEntry:
    """A refresh-token row that is not its user's newest."""

    id: str
    user_id: str


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this version knows (read once from the migration scripts)."""
    head = ScriptDirectory(_SCRIPT_LOCATION).get_current_head()
    assert head is not None
    return head


async def run_on_connection(url: DatabaseURL, work: Callable[[Connection], T]) -> T:
    """Run ``work`` with a SQLAlchemy connection to ``url``, committing at the end."""
    if url.is_sqlite:
        # SQLite runs synchronously on a worker thread; its engine is a plain one.
        def sync() -> T:
            sync_engine = sa.create_engine(url.sqlalchemy_url, poolclass=NullPool)
            try:
                with sync_engine.connect() as connection:
                    result = work(connection)
                    connection.commit()
                    return result
            finally:
                sync_engine.dispose()

        return await asyncio.to_thread(sync)
    require("postgres", "a PostgreSQL database")
    from sqlalchemy.ext.asyncio import create_async_engine  # needs greenlet: postgres extra

    engine = create_async_engine(
        url.sqlalchemy_url, poolclass=NullPool, connect_args=url.asyncpg_connect_kwargs()
    )
    try:
        async with engine.connect() as connection:
            result = await connection.run_sync(work)
            await connection.commit()
            return result
    except (OSError, TimeoutError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise UnavailableError(_cannot_connect(url, exc)) from None
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or _is_connect_error(exc):
            raise UnavailableError(_cannot_connect(url, exc)) from None
        raise
    finally:
        await engine.dispose()


_CONNECT_ERRORS = {
    "InvalidPasswordError",
    "InvalidAuthorizationSpecificationError",
    "InvalidCatalogNameError",
    "CannotConnectNowError",
}


def _causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (SQLAlchemy's ``orig``, Python's ``__cause__``)."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found and len(found) < 8:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return found


def _cannot_connect(url: DatabaseURL, exc: BaseException) -> str:
    names = [type(e).__name__ for e in _causes(exc)]
    reason = next((n for n in names if n in _CONNECT_ERRORS), names[-1])
    return f"cannot connect to {url.redacted()}: {reason}"


def _is_connect_error(error: BaseException) -> bool:
    """Authentication and connection failures (asyncpg raises them as PostgresError)."""
    return any(type(e).__name__ in _CONNECT_ERRORS for e in _causes(error))


async def upgrade(url: DatabaseURL, revision: str = "head") -> None:
    await run_on_connection(url, lambda c: command.upgrade(alembic_config(c), revision))


async def downgrade(url: DatabaseURL, revision: str) -> None:
    await run_on_connection(url, lambda c: command.downgrade(alembic_config(c), revision))


async def current_revision(url: DatabaseURL) -> str | None:
    return await run_on_connection(
        url, lambda c: MigrationContext.configure(c).get_current_revision()
    )


async def check_duplicates(url: DatabaseURL) -> list[tuple[str, int]]:
    """Users holding more than one refresh token, with their counts (empty when sound)."""

    def work(connection: Connection) -> list[tuple[str, int]]:
        _require_table(connection)
        rows = connection.execute(sa.text(USERS_WITH_DUPLICATES)).all()
        return [(str(r[0]), int(r[1])) for r in rows]

    return await run_on_connection(url, work)


async def dedupe(url: DatabaseURL, *, dry_run: bool = False) -> list[DuplicateEntry]:
    """Delete every refresh token but each user's newest; offline tokens are untouched."""

    def work(connection: Connection) -> list[DuplicateEntry]:
        _require_table(connection)
        statement = SELECT_DUPLICATES if dry_run else DELETE_DUPLICATES
        rows = connection.execute(sa.text(statement)).all()
        return sorted(DuplicateEntry(str(r[0]), str(r[1])) for r in rows)

    return await run_on_connection(url, work)


def _require_table(connection: Connection) -> None:
    if not sa.inspect(connection).has_table("auth_vault"):
        raise MigrationError("table auth_vault does not exist; run `token-vault db upgrade`")
