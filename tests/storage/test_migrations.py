"""Migrations: up and down on both backends, and the unique index refusing duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.support.databases import BACKENDS, Databases
from tests.support.rows import write_raw
from token_vault import ConfigurationError, DuplicateRefreshTokensError, Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.migrate import run_on_connection
from token_vault.storage.url import DatabaseURL

INDEX = "auth_vault_user_id_token_type_unique_idx"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def index_names(url: DatabaseURL) -> set[str]:
    def names(connection: sa.Connection) -> set[str]:
        inspector = sa.inspect(connection)
        if not inspector.has_table("auth_vault"):
            return set()
        return {str(i["name"]) for i in inspector.get_indexes("auth_vault")}

    return await run_on_connection(url, names)


async def row_count(url: DatabaseURL) -> int:
    def count(connection: sa.Connection) -> int:
        return int(connection.execute(sa.text("SELECT COUNT(*) FROM auth_vault")).scalar_one())

    return await run_on_connection(url, count)


@pytest.mark.parametrize("dialect", BACKENDS)
async def test_upgrade_to_head_and_down_to_base(databases: Databases, dialect: str) -> None:
    url = DatabaseURL.parse(databases.fresh(dialect, migrated=False))
    assert await migrate.current_revision(url) is None
    await migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()
    assert {INDEX, "auth_vault_user_id_idx", "auth_vault_session_state_idx"} <= await index_names(
        url
    )
    await migrate.downgrade(url, "0001")
    assert INDEX not in await index_names(url)
    await migrate.downgrade(url, "base")
    assert await migrate.current_revision(url) is None
    assert await index_names(url) == set()
    await migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()


async def test_postgres_unique_index_is_valid_and_partial(databases: Databases) -> None:
    url = DatabaseURL.parse(databases.fresh("postgresql"))

    def definition(connection: sa.Connection) -> tuple[str, bool]:
        row = connection.execute(
            sa.text(
                "SELECT pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name"
            ),
            {"name": INDEX},
        ).one()
        return str(row[0]), bool(row[1])

    text, valid = await run_on_connection(url, definition)
    assert valid
    assert "UNIQUE INDEX" in text
    assert "WHERE (token_type = 'refresh'::text)" in text


@pytest.fixture(params=BACKENDS)
async def before_the_index(request: pytest.FixtureRequest, databases: Databases) -> DatabaseURL:
    """A database at revision 0001, once per backend: the table, not yet the unique index."""
    url = DatabaseURL.parse(databases.fresh(str(request.param), migrated=False))
    await migrate.upgrade(url, "0001")
    return url


async def test_duplicates_stop_the_index_revision_until_deduped(
    before_the_index: DatabaseURL, keyring: Keyring
) -> None:
    url = before_the_index
    for n in range(3):
        await write_raw(url, keyring, "alice", "refresh", f"alice-{n}", T0 + timedelta(n))
    for n in range(2):
        await write_raw(url, keyring, "bob", "refresh", f"bob-{n}", T0 + timedelta(n))
    await write_raw(url, keyring, "carol", "refresh", "carol-0", T0)
    offline = [await write_raw(url, keyring, "alice", "offline", f"off-{n}", T0) for n in range(2)]

    with pytest.raises(DuplicateRefreshTokensError) as stopped:
        await migrate.upgrade(url)
    assert stopped.value.users_affected == 2
    assert "token-vault db dedupe" in str(stopped.value)
    assert await migrate.current_revision(url) == "0001"
    assert INDEX not in await index_names(url)
    assert await row_count(url) == 8

    assert await migrate.check_duplicates(url) == [("alice", 3), ("bob", 2)]
    planned = await migrate.dedupe(url, dry_run=True)
    assert len(planned) == 3
    assert await row_count(url) == 8
    removed = await migrate.dedupe(url)
    assert removed == planned
    assert await row_count(url) == 5
    assert await migrate.check_duplicates(url) == []

    await migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()
    async with await TokenVault.open(url, keyring) as vault:
        alice = await vault.get_refresh_token("alice")
        bob = await vault.get_refresh_token("bob")
        assert alice is not None
        assert alice.token == "alice-2"
        assert bob is not None
        assert bob.token == "bob-1"
        remaining_offline = await vault.list_tokens("alice", "offline")
        assert sorted(e.id for e in remaining_offline) == sorted(offline)
        # The upsert now finds the partial index and keeps the surviving id.
        assert await vault.upsert_refresh_token("alice", "alice-3", T0) == alice.id


async def test_upsert_before_the_index_exists_fails_loudly(
    before_the_index: DatabaseURL, keyring: Keyring
) -> None:
    url = before_the_index
    async with await TokenVault.open(url, keyring) as vault:
        with pytest.raises(ConfigurationError, match="db upgrade"):
            await vault.upsert_refresh_token("alice", "t", T0)
    assert await row_count(url) == 0
