"""token_vault.testing: what a user's own tests get, used the way they would use it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from token_vault import AccessTokens, ProviderUnavailableError, ReauthRequiredError, TokenVault
from token_vault.storage.url import DatabaseURL
from token_vault.testing import FakeProvider, FrozenClock, fixed_keyring
from token_vault.vault import schema


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def vault(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[TokenVault]:
    url = f"sqlite:///{tmp_path / 'kit.db'}"
    await schema.upgrade(DatabaseURL.parse(url))
    opened = await TokenVault.open(url, fixed_keyring(), clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


def test_fixed_keyring_is_the_same_every_time_and_names_its_primary() -> None:
    first, second = fixed_keyring("seed", "old", "new"), fixed_keyring("seed", "old", "new")
    assert first.primary == "new"
    assert first.to_spec() == second.to_spec()
    assert fixed_keyring("other").to_spec() != fixed_keyring("seed").to_spec()


def test_frozen_clock_moves_only_when_told() -> None:
    clock = FrozenClock()
    start = clock()
    assert clock() == start
    assert clock.advance(90) == start + timedelta(seconds=90)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)


async def test_fake_provider_refreshes_once_then_serves_the_cache(
    vault: TokenVault, clock: FrozenClock
) -> None:
    fake = FakeProvider()
    first_token = fake.issue_refresh_token("alice")
    await vault.upsert_refresh_token("alice", first_token, clock() + timedelta(days=1))
    provider = fake.provider()
    try:
        tokens = AccessTokens(vault, provider, clock=clock)
        handed = await tokens.get_access_token("alice")
        again = await tokens.get_access_token("alice")
        assert handed.refreshed
        assert not again.refreshed
        assert again.token == handed.token
        assert fake.refresh_requests == 1
        stored = await vault.get_refresh_token("alice")
        assert stored is not None
        assert stored.token != first_token  # rotated, and the rotated one kept
        assert first_token in fake.revoked
        assert stored.metadata["refreshCount"] == 1

        clock.advance(fake.access_ttl)  # the cached token lapses: one more refresh
        assert (await tokens.get_access_token("alice")).refreshed
        assert fake.refresh_requests == 2
    finally:
        await provider.close()


async def test_fake_provider_kills_grants_and_fails_on_demand(
    vault: TokenVault, clock: FrozenClock
) -> None:
    fake = FakeProvider()
    await vault.upsert_refresh_token(
        "bob", fake.issue_refresh_token("bob"), clock() + timedelta(days=1)
    )
    provider = fake.provider()
    try:
        tokens = AccessTokens(vault, provider, clock=clock)
        fake.fail_next(503)  # a 5xx is not retried: the token may have been rotated
        with pytest.raises(ProviderUnavailableError):
            await tokens.get_access_token("bob")
        fake.revoke_all()
        with pytest.raises(ReauthRequiredError) as dead:
            await tokens.get_access_token("bob")
        assert dead.value.reason == "invalid_grant"
        entry = await vault.get_refresh_token("bob")
        assert entry is not None
        assert entry.needs_reauth
    finally:
        await provider.close()
