"""What an attacker with a database dump sees: ciphertext, never a token."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import subprocess
from datetime import UTC, datetime

import pytest

from tests.support.databases import Databases
from token_vault import DecryptionError, Key, Keyring, TokenVault
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
TOKENS = [f"rt-{n}-eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ" for n in range(5)]


async def fill(url: str, keyring: Keyring) -> None:
    async with await TokenVault.open(url, keyring) as vault:
        for n, token in enumerate(TOKENS):
            await vault.upsert_refresh_token(f"user-{n}", token, datetime(2030, 1, 1, tzinfo=UTC))
            await vault.store(f"user-{n}", token[::-1], expires_at=datetime(2030, 1, 1, tzinfo=UTC))


def assert_no_token(dump: str) -> None:
    assert "user-3" in dump  # the dump is real and holds the rows
    for token in TOKENS + [t[::-1] for t in TOKENS]:
        assert token not in dump
        assert base64.b64encode(token.encode()).decode() not in dump
        assert token.encode().hex() not in dump


async def test_postgres_dump_contains_no_token(
    databases: Databases, pg_cluster: PgCluster, keyring: Keyring
) -> None:
    url = databases.fresh("postgresql")
    await fill(url, keyring)
    name = url.rsplit("/", 1)[1]
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(pg_cluster.bindir / "pg_dump"),
            "--inserts",
            "-h",
            "127.0.0.1",
            "-p",
            str(pg_cluster.port),
            "-U",
            pg_cluster.user,
            name,
        ],
        env={"PGPASSWORD": pg_cluster.password},
        capture_output=True,
        text=True,
        check=True,
    )
    assert_no_token(result.stdout)


async def test_sqlite_dump_contains_no_token(databases: Databases, keyring: Keyring) -> None:
    url = databases.fresh("sqlite")
    await fill(url, keyring)
    with sqlite3.connect(DatabaseURL.parse(url).sqlite_path) as connection:
        dump = "\n".join(connection.iterdump())
    assert_no_token(dump)


async def test_ciphertext_moved_between_rows_in_the_database_never_decrypts(
    databases: Databases, pg_cluster: PgCluster, keyring: Keyring
) -> None:
    """An attacker with write access to the table swaps ciphertexts between rows."""
    url = databases.fresh("postgresql")
    name = url.rsplit("/", 1)[1]
    other = Keyring([keyring.key("k1"), Key.generate("k2")], primary="k1")
    async with await TokenVault.open(url, other) as vault:
        await vault.upsert_refresh_token("alice", "alice-refresh-token", EXPIRES)
        await vault.upsert_refresh_token("bob", "bob-refresh-token", EXPIRES)
        offline = await vault.store("alice", "alice-offline-token", expires_at=EXPIRES)
        moves = {
            "to another user": "UPDATE auth_vault AS t SET ciphertext = s.ciphertext, "
            "nonce = s.nonce FROM auth_vault AS s WHERE t.user_id = 'bob' "
            "AND t.token_type = 'refresh' AND s.user_id = 'alice' AND s.token_type = 'refresh'",
            "to another type": "UPDATE auth_vault AS t SET ciphertext = s.ciphertext, "
            f"nonce = s.nonce FROM auth_vault AS s WHERE t.id = '{offline}' "
            "AND s.user_id = 'alice' AND s.token_type = 'refresh'",
            "to another key id": "UPDATE auth_vault SET key_id = 'k2' "
            "WHERE user_id = 'alice' AND token_type = 'refresh'",
        }
        for sql in moves.values():
            pg_cluster.psql(sql, database=name)
        for user in ("bob", "alice"):
            with pytest.raises(DecryptionError):
                await vault.get_refresh_token(user)
        with pytest.raises(DecryptionError):
            await vault.retrieve(offline)


async def test_an_offline_ciphertext_moved_to_another_offline_row_never_decrypts(
    databases: Databases, pg_cluster: PgCluster, keyring: Keyring
) -> None:
    """Format 2 binds the entry id: two offline entries of one user, one swapped."""
    url = databases.fresh("postgresql")
    name = url.rsplit("/", 1)[1]
    async with await TokenVault.open(url, keyring) as vault:
        first = await vault.store("carol", "carol-offline-one", expires_at=EXPIRES)
        second = await vault.store("carol", "carol-offline-two", expires_at=EXPIRES)
        pg_cluster.psql(
            "UPDATE auth_vault AS t SET ciphertext = s.ciphertext, nonce = s.nonce, "
            f"seal_version = s.seal_version FROM auth_vault AS s WHERE t.id = '{second}' "
            f"AND s.id = '{first}'",
            database=name,
        )
        with pytest.raises(DecryptionError):
            await vault.retrieve(second)
        opened = await vault.retrieve(first)
        assert opened is not None
        assert opened.token == "carol-offline-one"


async def test_format_1_rows_still_open_and_rotation_reseals_them_to_format_2(
    databases: Databases, pg_cluster: PgCluster, keyring: Keyring
) -> None:
    url = databases.fresh("postgresql")
    name = url.rsplit("/", 1)[1]
    sealed = keyring.seal("dave-old-offline", user_id="dave", token_type="offline")
    assert sealed.version == 1
    pg_cluster.psql(
        "INSERT INTO auth_vault (id, user_id, token_type, ciphertext, nonce, key_id, "
        "expires_at, metadata, created_at, updated_at) VALUES ('old-row', 'dave', 'offline', "
        f"'\\x{sealed.ciphertext.hex()}', '\\x{sealed.nonce.hex()}', '{sealed.key_id}', "
        "'2030-01-01Z', '{}', now(), now())",
        database=name,
    )
    async with await TokenVault.open(url, keyring) as vault:
        old = await vault.retrieve("old-row")
        assert old is not None
        assert old.token == "dave-old-offline"
        report = await vault.rotate_keys()
        assert report.resealed == 1
        version = pg_cluster.psql(
            "SELECT seal_version FROM auth_vault WHERE id = 'old-row'", database=name
        )
        assert version.strip() == "2"
        again = await vault.retrieve("old-row")
        assert again is not None
        assert again.token == "dave-old-offline"
