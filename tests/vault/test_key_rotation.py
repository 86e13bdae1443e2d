"""Online key rotation: every row re-sealed with the new primary while traffic runs."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from tests.support.cli import cli
from tests.support.databases import BACKENDS, Databases
from token_vault import Key, Keyring, KeyringError, TokenVault

EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
SIZES = {"postgresql": 10_000, "sqlite": 2_000}


async def fill(vault: TokenVault, count: int) -> dict[str, str]:
    tokens = {f"user-{n}": f"token-{n}-{random.getrandbits(64):x}" for n in range(count)}
    items = list(tokens.items())
    for start in range(0, count, 500):
        await asyncio.gather(
            *(
                vault.upsert_refresh_token(u, t, EXPIRES, None, {"n": 1})
                for u, t in items[start : start + 500]
            )
        )
    return tokens


@pytest.mark.slow
@pytest.mark.parametrize("dialect", BACKENDS)
async def test_rotation_under_traffic_loses_nothing(databases: Databases, dialect: str) -> None:
    url = databases.fresh(dialect)
    old = Keyring([Key.generate("old")], primary="old")
    new = old.with_primary(Key.generate("new"))
    count = SIZES[dialect]
    async with await TokenVault.open(url, old, pool_size=20) as before:
        tokens = await fill(before, count)
        offline_id = await before.store("user-1", "offline-1", expires_at=EXPIRES)
        stamps = {
            e.user_id: e.updated_at
            for e in [await before.get_refresh_token(f"user-{n}") for n in range(0, count, 97)]
            if e is not None
        }
    traffic_users = [f"user-{n}" for n in range(40)]
    last_written: dict[str, str] = {}
    failures: list[BaseException] = []
    done = asyncio.Event()

    async with await TokenVault.open(url, new, pool_size=20) as vault:

        async def writer(user: str) -> None:
            n = 0
            while not done.is_set():
                token = f"{user}-traffic-{n}"
                try:
                    await vault.upsert_refresh_token(user, token, EXPIRES, None, {"w": n})
                    last_written[user] = token
                except Exception as exc:  # every failure is a test failure
                    failures.append(exc)
                n += 1
                await asyncio.sleep(0)

        async def reader() -> None:
            while not done.is_set():
                user = f"user-{random.randrange(count)}"
                try:
                    entry = await vault.get_refresh_token(user)
                    assert entry is not None
                except Exception as exc:
                    failures.append(exc)
                await asyncio.sleep(0)

        traffic = [asyncio.create_task(writer(u)) for u in traffic_users]
        traffic += [asyncio.create_task(reader()) for _ in range(4)]
        progress: list[int] = []
        report = await vault.rotate_keys(batch_size=250, progress=progress.append)
        done.set()
        await asyncio.gather(*traffic)

        assert failures == []
        assert report.batches >= count // 250
        assert sum(progress) == report.resealed + report.skipped_concurrent
        assert await vault.keys_in_use() == {"new": count + 1}
        for user, original in tokens.items():
            entry = await vault.get_refresh_token(user)
            assert entry is not None
            assert entry.key_id == "new"
            assert entry.token == last_written.get(user, original)
            if user in stamps and user not in last_written:
                assert entry.updated_at == stamps[user]
        offline = await vault.retrieve(offline_id)
        assert offline is not None
        assert offline.token == "offline-1"


async def test_rotation_resumes_after_an_interruption(databases: Databases) -> None:
    url = databases.fresh("sqlite")
    old = Keyring([Key.generate("old")], primary="old")
    async with await TokenVault.open(url, old) as vault:
        tokens = await fill(vault, 300)
    new = old.with_primary(Key.generate("new"))
    async with await TokenVault.open(url, new) as vault:
        first = await vault.rotate_keys(batch_size=100, max_batches=1)
        assert first.resealed == 100
        assert await vault.keys_in_use() == {"old": 200, "new": 100}
        second = await vault.rotate_keys(batch_size=100)
        assert second.resealed == 200
        assert await vault.keys_in_use() == {"new": 300}
        entry = await vault.get_refresh_token("user-7")
        assert entry is not None
        assert entry.token == tokens["user-7"]
    with pytest.raises(KeyringError):
        new.without("new")


@pytest.mark.slow
def test_cli_rotation_and_key_removal(databases: Databases) -> None:
    url = databases.fresh("sqlite")
    old = Keyring([Key.generate("old")], primary="old")

    async def seed() -> None:
        async with await TokenVault.open(url, old) as vault:
            await fill(vault, 50)

    asyncio.run(seed())
    env = {"TOKEN_VAULT_DATABASE_URL": url, "TOKEN_VAULT_KEYS": old.to_spec()}
    added = cli("keys", "add", env=env)
    assert added.returncode == 0
    new_spec = added.stdout.strip().removeprefix("TOKEN_VAULT_KEYS=")
    new = Keyring.from_spec(new_spec)
    assert new.key_ids == {"old", new.primary}
    env["TOKEN_VAULT_KEYS"] = new_spec
    refused = cli("keys", "remove", "old", env=env)
    assert refused.returncode == 1
    assert "50 ciphertext(s) still use key old" in refused.stderr
    rotated = cli("keys", "rotate", "--batch-size", "20", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-sealed 50 row(s)" in rotated.stdout
    status = cli("keys", "status", env=env)
    assert f"{new.primary} (primary): 50" in status.stdout
    assert "old: 0" in status.stdout
    removed = cli("keys", "remove", "old", env=env)
    assert removed.returncode == 0
    final = Keyring.from_spec(removed.stdout.strip().removeprefix("TOKEN_VAULT_KEYS="))
    assert final.key_ids == {new.primary}

    async def still_readable() -> str | None:
        async with await TokenVault.open(url, final) as vault:
            entry = await vault.get_refresh_token("user-3")
            return entry.token if entry else None

    assert (asyncio.run(still_readable()) or "").startswith("token-3-")
