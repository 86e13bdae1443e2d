"""Shared fixtures: a throwaway PostgreSQL cluster, fresh databases, a keyring, a vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import leakcheck
from tests.support.databases import BACKENDS, Databases
from token_vault import Key, Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="session", autouse=True)
def watch_for_secret_leaks() -> Iterator[None]:
    """Record secrets and the places they must never reach (see tests/support/leakcheck.py)."""
    with leakcheck.watching():
        yield


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster(settings={"fsync": "off", "synchronous_commit": "off"})
    leakcheck.remember_secret(cluster.password)
    cluster.start()
    try:
        url = DatabaseURL.parse(cluster.url_for("template_vault"))
        cluster.psql("CREATE DATABASE template_vault", database="postgres")
        asyncio.run(migrate.upgrade(url))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def databases(pg_cluster: PgCluster, tmp_path: Path) -> Databases:
    return Databases(pg_cluster, tmp_path)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, databases: Databases) -> str:
    """A freshly migrated database, once per backend."""
    return databases.fresh(str(request.param))


@pytest.fixture
def keyring() -> Keyring:
    key = Key.generate("k1")
    return Keyring([key], primary="k1")


@pytest.fixture
async def vault(database_url: str, keyring: Keyring) -> AsyncIterator[TokenVault]:
    opened = await TokenVault.open(database_url, keyring, pool_size=25)
    try:
        yield opened
    finally:
        await opened.close()
