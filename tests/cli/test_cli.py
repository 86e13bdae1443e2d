"""The `token-vault` command, run as a real subprocess against real databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from tests.support.cli import cli
from tests.support.databases import Databases
from tests.support.rows import write_raw
from token_vault import Keyring
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, databases: Databases) -> str:
    return databases.fresh(str(request.param), migrated=False)


@pytest.mark.slow
def test_keys_generate_prints_a_line_that_opens_the_vault(empty_url: str) -> None:
    generated = cli("keys", "generate", env={})
    assert generated.returncode == 0
    name, _, spec = generated.stdout.strip().partition("=")
    assert name == "TOKEN_VAULT_KEYS"
    assert len(generated.stdout.strip().splitlines()) == 1
    env = {"TOKEN_VAULT_KEYS": spec, "TOKEN_VAULT_DATABASE_URL": empty_url}
    assert cli("db", "upgrade", env=env).returncode == 0
    demo = cli("demo", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "same id: True" in demo.stdout
    assert spec.split(",")[1].partition("=")[2] not in demo.stdout + demo.stderr


@pytest.mark.slow
def test_db_commands_walk_the_revisions(empty_url: str) -> None:
    env = {"TOKEN_VAULT_DATABASE_URL": empty_url}
    assert "current: base" in cli("db", "current", env=env).stdout
    up = cli("db", "upgrade", "0001", env=env)
    assert up.returncode == 0
    assert "at revision 0001" in up.stdout
    assert cli("db", "upgrade", env=env).returncode == 0
    assert f"current: {migrate.head_revision()}" in cli("db", "current", env=env).stdout
    down = cli("db", "downgrade", "base", env=env)
    assert down.returncode == 0
    assert "at revision base" in down.stdout
    if "@" in empty_url:
        password = empty_url.split(":")[2].split("@")[0]
        assert password not in up.stdout + down.stdout


@pytest.mark.slow
def test_db_check_and_dedupe(empty_url: str, keyring: Keyring) -> None:
    url = DatabaseURL.parse(empty_url)
    asyncio.run(migrate.upgrade(url, "0001"))

    async def seed() -> None:
        for n in range(2):
            await write_raw(url, keyring, "alice", "refresh", f"t{n}", T0)
        await write_raw(url, keyring, "alice", "offline", "o", T0)

    asyncio.run(seed())
    env = {"TOKEN_VAULT_DATABASE_URL": empty_url}
    check = cli("db", "check", env=env)
    assert check.returncode == 1
    assert "user alice holds 2 refresh tokens" in check.stdout
    blocked = cli("db", "upgrade", env=env)
    assert blocked.returncode == 7
    assert "1 user(s) hold more than one refresh token" in blocked.stderr
    assert "token-vault db dedupe" in blocked.stderr
    dry = cli("db", "dedupe", "--dry-run", env=env)
    assert "would remove 1 duplicate refresh token(s) of 1 user(s)" in dry.stdout
    assert cli("db", "check", env=env).returncode == 1
    done = cli("db", "dedupe", env=env)
    assert "removed 1 duplicate refresh token(s)" in done.stdout
    assert "t0" not in done.stdout
    assert "t1" not in done.stdout
    assert cli("db", "check", env=env).returncode == 0
    assert cli("db", "upgrade", env=env).returncode == 0


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (None, "no encryption key: set TOKEN_VAULT_KEYS"),
        ("primary=k1,k1=c2hvcnQ=", "AES-256 needs 32"),
        ("k1=" + "A" * 43 + "=", "name the primary key explicitly"),
    ],
)
def test_missing_or_bad_key_refuses_to_open(
    databases: Databases, keys: str | None, expected: str
) -> None:
    env = {"TOKEN_VAULT_DATABASE_URL": databases.fresh("sqlite")}
    if keys is not None:
        env["TOKEN_VAULT_KEYS"] = keys
    result = cli("demo", env=env)
    assert result.returncode == 3
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_a_clear_error() -> None:
    env = {
        "TOKEN_VAULT_DATABASE_URL": "postgresql://vault:hunter2secret@127.0.0.1:1/vault",
    }
    result = cli("db", "current", env=env)
    assert result.returncode == 6
    assert "cannot connect" in result.stderr
    assert "hunter2secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_version_prints_the_packages_version() -> None:
    from token_vault import __version__

    done = cli("--version", env={})
    assert done.returncode == 0
    assert done.stdout == f"token-vault {__version__}\n"


@pytest.mark.slow
def test_json_output_for_scripts(databases: Databases, keyring: Keyring) -> None:
    url = databases.fresh("sqlite", migrated=False)
    env = {"TOKEN_VAULT_DATABASE_URL": url, "TOKEN_VAULT_KEYS": keyring.to_spec()}
    before = json.loads(cli("db", "current", "--json", env=env).stdout)
    assert before == {"current": None, "head": migrate.head_revision(), "up_to_date": False}
    asyncio.run(migrate.upgrade(DatabaseURL.parse(url), "0001"))

    async def seed() -> None:
        for n in range(2):
            await write_raw(DatabaseURL.parse(url), keyring, "alice", "refresh", f"t{n}", T0)

    asyncio.run(seed())
    check = cli("db", "check", "--json", env=env)
    assert check.returncode == 1
    users = [{"user_id": "alice", "refresh_tokens": 2}]
    assert json.loads(check.stdout) == {"ok": False, "users_with_duplicates": users}
    assert cli("db", "dedupe", env=env).returncode == 0
    assert cli("db", "upgrade", env=env).returncode == 0
    check = cli("db", "check", "--json", env=env)
    assert (check.returncode, json.loads(check.stdout)["ok"]) == (0, True)
    after = json.loads(cli("db", "current", "--json", env=env).stdout)
    assert after["up_to_date"] is True

    stats = json.loads(cli("stats", "--json", env=env).stdout)
    assert stats == {"types": {"refresh": {"entries": 1, "expired": 0, "needs_reauth": 0}}}
    status = json.loads(cli("keys", "status", "--json", env=env).stdout)
    key = {"id": "k1", "primary": True, "configured": True, "ciphertexts": 1}
    assert status == {"primary": "k1", "keys": [key], "kek": None}  # plain keys, no KEK
