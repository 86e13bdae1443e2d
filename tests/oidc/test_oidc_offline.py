"""Logins that ask for offline access keep the token as an offline entry."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from tests.support.oidc import OidcWorld, oidc_world
from token_vault import TokenType, TokenVault
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def offline_world(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcWorld]:
    name = f"offline_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    with oidc_world(
        pg_cluster.url_for(name),
        tmp_path_factory.mktemp("offline"),
        scopes=("openid", "profile", "email", "offline_access"),
    ) as opened:
        yield opened


async def test_offline_access_login_keeps_an_offline_entry_per_login(
    offline_world: OidcWorld,
) -> None:
    browser = await asyncio.to_thread(offline_world.log_in, "olivia")
    await asyncio.to_thread(offline_world.log_in, "olivia")
    async with await TokenVault.open(offline_world.database_url, offline_world.keyring) as vault:
        entries = await vault.list_tokens("olivia")
    assert [e.token_type for e in entries] == [TokenType.OFFLINE, TokenType.OFFLINE]
    assert entries[0].token != entries[1].token
    assert all(e.session_state for e in entries)
    assert offline_world.session_of(browser)["entry_id"] == entries[0].id
