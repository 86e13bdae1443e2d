"""Keep-alive: entries whose refresh tokens live 20 seconds stay alive for two minutes
under the refresher, while an entry left alone dies."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from tests.support.oidc import OidcWorld, world_in_fresh_database
from token_vault import AccessTokens, OpenIDProvider, ReauthRequiredError, TokenVault
from token_vault.oidc.keepalive import Refresher
from token_vault.testing.pgcluster import PgCluster

REFRESH_TTL = 20  # seconds, at the provider


async def _refresh_works(world: OidcWorld, vault: TokenVault, user: str) -> bool:
    provider = OpenIDProvider(world.settings)
    try:
        await AccessTokens(vault, provider).refresh_now(user)
    except ReauthRequiredError:
        return False
    finally:
        await provider.close()
    return True


@pytest.mark.slow
async def test_the_refresher_keeps_short_lived_entries_alive(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with (
        world_in_fresh_database(
            pg_cluster, tmp_path_factory.mktemp("kept"), refresh_token_ttl=REFRESH_TTL
        ) as kept,
        world_in_fresh_database(
            pg_cluster, tmp_path_factory.mktemp("left"), refresh_token_ttl=REFRESH_TTL
        ) as left,
    ):
        for user in ("kim", "kai"):
            await asyncio.to_thread(kept.log_in, user)
        await asyncio.to_thread(left.log_in, "lee")
        async with (
            await TokenVault.open(kept.database_url, kept.keyring) as vault,
            await TokenVault.open(left.database_url, left.keyring) as left_vault,
        ):
            entry = await vault.get_refresh_token("kim")
            assert entry is not None
            assert entry.expires_at - entry.created_at <= timedelta(seconds=REFRESH_TTL + 1)
            provider = OpenIDProvider(kept.settings)
            outcomes: Counter[str] = Counter()
            try:
                refresher = Refresher(
                    vault,
                    AccessTokens(vault, provider),
                    window=timedelta(seconds=12),
                    concurrency=2,
                    rate=10,
                    observer=lambda outcome: outcomes.update([outcome]),
                )
                stop = asyncio.Event()
                running = asyncio.create_task(refresher.run(every=timedelta(seconds=2), stop=stop))
                await asyncio.sleep(120)
                stop.set()
                await running
            finally:
                await provider.close()
            # Each pass refreshed what was about to lapse: ~10 times per entry, no failure.
            assert outcomes["failed"] == 0
            assert outcomes["needs_reauth"] == 0
            assert outcomes["refreshed"] >= 2 * (120 // REFRESH_TTL)
            for user in ("kim", "kai"):
                assert await _refresh_works(kept, vault, user), user
            assert not await _refresh_works(left, left_vault, "lee")
