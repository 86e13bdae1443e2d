"""Shared fixtures (a throwaway PostgreSQL cluster, fresh databases, a keyring, a vault)
and the session's secret-leak watch (see tests/support/leakcheck.py).

The leak watch is hooks, not a test: it starts when pytest configures the run and scans
when the session finishes, so it covers whatever ran (the whole suite or one file) and
cannot be deselected, skipped or ordered away. A leak makes the run fail.
"""

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

LEAK_SCAN = pytest.StashKey[leakcheck.Scan]()


def pytest_configure() -> None:
    """Record secrets and the places they must never reach, from the start of the run."""
    leakcheck.start()


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, which may still log
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Scan what this run recorded; a leak fails the run."""
    scan = leakcheck.scan()
    session.config.stash[LEAK_SCAN] = scan
    if scan.failed and session.exitstatus in (
        pytest.ExitCode.OK,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    scan = config.stash.get(LEAK_SCAN, None)
    if scan is None:
        terminalreporter.write_line("secret leak scan: did not run", red=True)
        return
    if scan.failed:
        terminalreporter.write_sep("=", "secret leak scan failed", red=True)
        for leak in scan.leaks:
            terminalreporter.write_line(leak, red=True)
    terminalreporter.write_line(
        f"secret leak scan: {scan.summary()}", red=scan.failed, green=not scan.failed
    )


def pytest_unconfigure() -> None:
    leakcheck.stop()


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
