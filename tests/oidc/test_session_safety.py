"""Refreshes that never kill a session: slow providers, skewed clocks, lost answers.

With Keycloak-style rotation, a refresh token works once and reusing it revokes the whole
grant. Each test here makes one of the ways a second refresh could happen, and checks
that the provider sees exactly one refresh and the stored entry stays alive and right.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support import ROOT
from tests.support.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    OidcWorld,
    expire_cached_access_token,
    oidc_world,
    stored_row,
)
from token_vault import AccessTokens, OpenIDProvider, ProviderUnavailableError, TokenVault
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def world(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    name = f"safety_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    with oidc_world(pg_cluster.url_for(name), tmp_path_factory.mktemp("safety")) as opened:
        yield opened


@pytest.fixture
async def store(world: OidcWorld) -> AsyncIterator[TokenVault]:
    vault = await TokenVault.open(world.database_url, world.keyring)
    yield vault
    await vault.close()


async def _workers(
    world: OidcWorld, user: str, *extra_envs: dict[str, str], start_in: float = 6.0
) -> list[dict[str, Any]]:
    """One access-token worker process per ``extra_envs``, all starting together."""
    start_at = time.time() + start_in
    base = {
        **os.environ,
        "WORKER_DATABASE_URL": world.database_url,
        "WORKER_KEYS": world.keyring.to_spec(),
        "WORKER_ISSUER": world.provider.issuer,
        "WORKER_CLIENT_ID": CLIENT_ID,
        "WORKER_CLIENT_SECRET": CLIENT_SECRET,
        "WORKER_USER": user,
        "WORKER_CALLS": "5",
    }
    processes = []
    for extra in extra_envs:
        env = {**base, "WORKER_START_AT": str(start_at + float(extra.pop("AFTER", "0"))), **extra}
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.access_worker",
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = [await process.communicate() for process in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


async def _alive(world: OidcWorld, access_token: str) -> bool:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            world.provider.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
        )
    return response.status_code == 200


@pytest.mark.slow
async def test_a_provider_slower_than_the_lease_still_gets_one_refresh(
    world: OidcWorld, store: TokenVault
) -> None:
    await asyncio.to_thread(world.log_in, "slow")
    await expire_cached_access_token(store, "slow")
    world.provider.reset_stats()
    world.provider.delay_next(8.0)  # the provider answers after a 3-second lease would lapse
    results = await _workers(
        world,
        "slow",
        {"WORKER_LEASE_SECONDS": "3"},
        {"WORKER_LEASE_SECONDS": "3", "AFTER": "1"},  # arrives while the first one waits
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
    assert await _alive(world, tokens.pop())


@pytest.mark.slow
async def test_a_replica_whose_clock_runs_61_seconds_ahead_changes_nothing(
    world: OidcWorld, store: TokenVault
) -> None:
    await asyncio.to_thread(world.log_in, "skew")
    await expire_cached_access_token(store, "skew")
    world.provider.reset_stats()
    world.provider.delay_next(2.0)
    before = datetime.now(UTC)
    results = await _workers(world, "skew", {}, {"WORKER_CLOCK_OFFSET": "61", "AFTER": "0.5"})
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
    assert await _alive(world, tokens.pop())


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
    await asyncio.to_thread(world.log_in, "lost")
    await expire_cached_access_token(store, "lost")
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
