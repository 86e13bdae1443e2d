"""The vault behind PgBouncer in transaction pooling mode (Debian's ``pgbouncer``).

Transaction pooling hands each transaction whichever server connection is free, so a
named prepared statement made on one is missing (or already taken) on the next. With
``?pgbouncer=transaction`` the vault's asyncpg connections keep no named statements and
everything runs: migrations, 1,000 concurrent upserts over 50 users, the single-flight
refresh across processes, and online key rotation. Without it the first burst breaks,
which shows these tests really go through transaction pooling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support.databases import Databases
from tests.support.oidc import (
    OidcWorld,
    due_for_refresh,
    run_access_workers,
    world_in_fresh_database,
)
from token_vault import Key, Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgbouncer import PgBouncer
from token_vault.testing.pgcluster import PgCluster

SERVER_CONNECTIONS = 10  # PgBouncer's pool per database
CLIENT_CONNECTIONS = 50  # the vault's pool: five clients per server connection
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bouncer(pg_cluster: PgCluster) -> Iterator[PgBouncer]:
    with PgBouncer(pg_cluster, pool_mode="transaction", pool_size=SERVER_CONNECTIONS) as running:
        yield running


def through(bouncer: PgBouncer, direct_url: str) -> str:
    """The same database, through PgBouncer."""
    return bouncer.url_for(urlsplit(direct_url).path.lstrip("/"))


@pytest.fixture
def bounced_url(bouncer: PgBouncer, databases: Databases) -> str:
    return through(bouncer, databases.fresh("postgresql"))


@pytest.fixture
async def bounced_vault(bounced_url: str) -> AsyncIterator[TokenVault]:
    keyring = Keyring([Key.generate("k1")], primary="k1")
    async with await TokenVault.open(bounced_url, keyring, pool_size=CLIENT_CONNECTIONS) as vault:
        yield vault


def test_the_installed_pgbouncer_needs_the_setting(bouncer: PgBouncer) -> None:
    """PgBouncer keeps prepared statements across transaction pooling from 1.21 on
    (``max_prepared_statements``); Debian 12 ships 1.18, which does not."""
    assert bouncer.version < (1, 21), "1.21+: see docs/scaling.md, the setting is optional there"


async def test_migrations_run_through_pgbouncer(bouncer: PgBouncer, databases: Databases) -> None:
    url = DatabaseURL.parse(through(bouncer, databases.fresh("postgresql", migrated=False)))
    await migrate.upgrade(url)
    assert await migrate.current_revision(url) == migrate.head_revision()


async def test_thousand_concurrent_upserts_over_fifty_users_through_pgbouncer(
    bounced_vault: TokenVault, bounced_url: str, pg_cluster: PgCluster
) -> None:
    users = [f"user-{n}" for n in range(50)]
    database = urlsplit(bounced_url).path.lstrip("/")
    server_connections: list[int] = []
    calls_done = asyncio.Event()

    async def watch() -> None:
        """How many server connections PgBouncer opened to the database at the peak."""
        watcher = await asyncpg.connect(pg_cluster.url_for("postgres"))
        try:
            while not calls_done.is_set():
                server_connections.append(
                    await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
                    )
                )
                await asyncio.sleep(0.01)
        finally:
            await watcher.close()

    async def call(n: int) -> tuple[str, str]:
        user = users[n % 50]
        entry_id = await bounced_vault.upsert_refresh_token(
            user, f"token-{n}", EXPIRES, f"s-{n}", {f"call-{n}": n}
        )
        return user, entry_id

    async def calls() -> list[tuple[str, str]]:
        try:
            return await asyncio.gather(*(call(n) for n in range(1000)))
        finally:
            calls_done.set()

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    results = await calls()
    elapsed = time.monotonic() - started
    await watcher

    ids_by_user: dict[str, set[str]] = {}
    for user, entry_id in results:
        ids_by_user.setdefault(user, set()).add(entry_id)
    assert len(ids_by_user) == 50
    assert all(len(ids) == 1 for ids in ids_by_user.values())
    for n, user in enumerate(users):
        entries = await bounced_vault.list_tokens(user)
        assert len(entries) == 1
        assert {f"call-{k}" for k in range(n, 1000, 50)} <= set(entries[0].metadata)
    print(
        f"1,000 upserts over 50 users in {elapsed:.2f} s through PgBouncer: "
        f"{CLIENT_CONNECTIONS} vault connections, at most {max(server_connections)} "
        "server connections"
    )
    assert max(server_connections) <= SERVER_CONNECTIONS


async def test_without_the_setting_transaction_pooling_breaks_named_statements(
    bounced_url: str,
) -> None:
    """The same burst with asyncpg's statement cache on: named statements land on server
    connections that do not hold them (this is what ``pgbouncer=transaction`` prevents)."""
    unset = bounced_url.replace("pgbouncer=transaction", "pgbouncer=session")
    keyring = Keyring([Key.generate("k1")], primary="k1")
    async with await TokenVault.open(unset, keyring, pool_size=CLIENT_CONNECTIONS) as vault:
        results = await asyncio.gather(
            *(
                vault.upsert_refresh_token(f"user-{n % 50}", "t", EXPIRES, None, {"n": n})
                for n in range(1000)
            ),
            return_exceptions=True,
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert any("prepared statement" in str(error) for error in errors), errors[:3]


@pytest.fixture(scope="module")
def world(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    with world_in_fresh_database(pg_cluster, tmp_path_factory.mktemp("bounced-oidc")) as opened:
        yield opened


@pytest.mark.slow
async def test_hundred_calls_from_four_processes_make_one_refresh_through_pgbouncer(
    world: OidcWorld, bouncer: PgBouncer
) -> None:
    bounced = dataclasses.replace(world, database_url=through(bouncer, world.database_url))
    async with await TokenVault.open(bounced.database_url, world.keyring) as vault:
        await due_for_refresh(world, vault, "dave")
    world.provider.reset_stats()
    start_at = time.time() + 8
    alike: list[dict[str, str]] = [{} for _ in range(4)]
    results = await run_access_workers(bounced, "dave", *alike, calls=25, start_at=start_at)
    tokens = [token for result in results for token in result["tokens"]]
    errors = [error for result in results for error in result["errors"]]
    assert errors == []
    assert len(tokens) == 100
    assert len(set(tokens)) == 1
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}


@pytest.mark.slow
async def test_key_rotation_under_traffic_through_pgbouncer(
    bouncer: PgBouncer, databases: Databases
) -> None:
    url = through(bouncer, databases.fresh("postgresql"))
    old = Keyring([Key.generate("old")], primary="old")
    new = old.with_primary(Key.generate("new"))
    count = 1_000
    tokens = {f"user-{n}": f"token-{n}-{random.getrandbits(64):x}" for n in range(count)}
    async with await TokenVault.open(url, old, pool_size=20) as before:
        items = list(tokens.items())
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    before.upsert_refresh_token(u, t, EXPIRES, None, {"n": 1})
                    for u, t in items[start : start + 500]
                )
            )
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

        traffic = [asyncio.create_task(writer(f"user-{n}")) for n in range(10)]
        started = time.monotonic()
        report = await vault.rotate_keys(batch_size=250)
        elapsed = time.monotonic() - started
        done.set()
        await asyncio.gather(*traffic)

        assert failures == []
        assert await vault.keys_in_use() == {"new": count}
        for user, original in tokens.items():
            entry = await vault.get_refresh_token(user)
            assert entry is not None
            assert entry.key_id == "new"
            assert entry.token == last_written.get(user, original)
    print(
        f"rotated {count} rows through PgBouncer in {elapsed:.1f} s while 10 writers ran: "
        f"{report.resealed} re-sealed, {report.skipped_concurrent} re-read after a write"
    )


def test_pgbouncer_stops_cleanly(pg_cluster: PgCluster) -> None:
    bouncer = PgBouncer(pg_cluster).start()
    port = bouncer.port
    bouncer.stop()
    bouncer.stop()  # twice is fine
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2))
