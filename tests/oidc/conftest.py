"""The OpenID world these tests run in, and the vault on its database.

``world`` is module-scoped: each test module gets a provider process, an app and a fresh
database of its own. A module that needs other provider settings (token lifetimes,
scopes) defines its own ``world`` with :func:`world_in_fresh_database`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.oidc import OidcWorld, world_in_fresh_database
from token_vault import TokenVault
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def world(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    with world_in_fresh_database(pg_cluster, tmp_path_factory.mktemp("oidc")) as opened:
        yield opened


@pytest.fixture
async def store(world: OidcWorld) -> AsyncIterator[TokenVault]:
    vault = await TokenVault.open(world.database_url, world.keyring)
    yield vault
    await vault.close()
