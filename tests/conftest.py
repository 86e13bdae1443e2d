"""Shared fixtures: a throwaway PostgreSQL cluster, fresh databases, a keyring, a vault."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import leakcheck
from token_vault import Key, Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

BACKENDS = ["postgresql", "sqlite"]


@pytest.fixture(scope="session", autouse=True)
def watch_for_secret_leaks() -> Iterator[None]:
    """Record secrets and the places they must never reach (see tests/leakcheck.py)."""
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


class Databases:
    """Makes fresh, migrated (or empty) databases on either backend."""

    def __init__(self, cluster: PgCluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp_path = tmp_path

    def fresh(self, dialect: str, *, migrated: bool = True) -> str:
        name = f"t_{secrets.token_hex(6)}"
        if dialect == "postgresql":
            template = "template_vault" if migrated else "template0"
            self.cluster.psql(f"CREATE DATABASE {name} TEMPLATE {template}", database="postgres")
            return self.cluster.url_for(name)
        url = f"sqlite:///{self.tmp_path / (name + '.db')}"
        if migrated:
            # A thread of its own, so this also works from inside a running event loop.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(asyncio.run, migrate.upgrade(DatabaseURL.parse(url))).result()
        return url


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
