"""Refreshes that never kill a session: slow providers, skewed clocks, lost answers.

With Keycloak-style rotation, a refresh token works once and reusing it revokes the whole
grant. Each test here makes one of the ways a second refresh could happen, and checks
that the provider sees exactly one refresh and the stored entry stays alive and right.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.oidc import (
    OidcWorld,
    due_for_refresh,
    run_access_workers,
    stored_row,
    userinfo_status,
)
from token_vault import AccessTokens, OpenIDProvider, ProviderUnavailableError, TokenVault


@pytest.mark.slow
async def test_a_provider_slower_than_the_lease_still_gets_one_refresh(
    world: OidcWorld, store: TokenVault
) -> None:
    await due_for_refresh(world, store, "slow")
    world.provider.reset_stats()
    world.provider.delay_next(8.0)  # the provider answers after a 3-second lease would lapse
    results = await run_access_workers(
        world,
        "slow",
        {"WORKER_LEASE_SECONDS": "3"},
        {"WORKER_LEASE_SECONDS": "3", "AFTER": "1"},  # arrives while the first one waits
        calls=5,
        start_at=time.time() + 6,
    )
    tokens = {token for result in results for token in result["tokens"]}
    assert [result["errors"] for result in results] == [[], []]
    assert len(tokens) == 1
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    row = await stored_row(world.database_url, "slow")
    assert row is not None
    assert not row.needs_reauth
    assert row.lease_owner is None
    assert row.metadata["refreshCount"] == 1
    assert await userinfo_status(world, tokens.pop()) == 200


@pytest.mark.slow
async def test_a_replica_whose_clock_runs_61_seconds_ahead_changes_nothing(
    world: OidcWorld, store: TokenVault
) -> None:
    await due_for_refresh(world, store, "skew")
    world.provider.reset_stats()
    world.provider.delay_next(2.0)
    before = datetime.now(UTC)
    results = await run_access_workers(
        world,
        "skew",
        {},
        {"WORKER_CLOCK_OFFSET": "61", "AFTER": "0.5"},
        calls=5,
        start_at=time.time() + 6,
    )
    assert [result["errors"] for result in results] == [[], []]
    tokens = {token for result in results for token in result["tokens"]}
    assert len(tokens) == 1
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    row = await stored_row(world.database_url, "skew")
    assert row is not None
    assert not row.needs_reauth
    # The cached token's expiry is on the database's clock, not the skewed replica's.
    assert row.access_expires_at is not None
    ttl = row.access_expires_at - before
    assert timedelta(0) < ttl <= timedelta(seconds=300 + 30)
    assert await userinfo_status(world, tokens.pop()) == 200


class LosesTheAnswer(httpx.AsyncBaseTransport):
    """Delivers the refresh to the provider (which rotates), then loses its answer."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.token_calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._real.handle_async_request(request)
        if request.url.path.endswith("/protocol/openid-connect/token"):
            self.token_calls += 1
            await response.aread()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_a_lost_answer_is_not_replayed(world: OidcWorld, store: TokenVault) -> None:
    await due_for_refresh(world, store, "lost")
    before = await stored_row(world.database_url, "lost")
    world.provider.reset_stats()
    transport = LosesTheAnswer()
    provider = OpenIDProvider(world.settings, transport=transport)
    try:
        with pytest.raises(ProviderUnavailableError):
            await AccessTokens(store, provider).get_access_token("lost")
    finally:
        await provider.close()
    assert transport.token_calls == 1  # the old token was sent once, never again
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    after = await stored_row(world.database_url, "lost")
    assert before is not None
    assert after is not None
    assert after.sealed == before.sealed
    assert not after.needs_reauth
    assert after.lease_owner is None
