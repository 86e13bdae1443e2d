"""Offline access end to end: one entry per user and client, usable, outliving sign-out."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.support.oidc import OidcWorld, post_from_page, world_in_fresh_database
from token_vault import AccessTokens, OpenIDProvider, ReauthRequiredError, TokenType, TokenVault
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def world(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    """The app asks for offline access at every login."""
    with world_in_fresh_database(
        pg_cluster,
        tmp_path_factory.mktemp("offline"),
        scopes=("openid", "profile", "email", "offline_access"),
    ) as opened:
        yield opened


async def test_a_second_login_replaces_the_offline_entry_and_revokes_the_old_token(
    world: OidcWorld, store: TokenVault
) -> None:
    first_browser = await asyncio.to_thread(world.log_in, "olivia")
    [first] = await store.list_tokens("olivia")
    world.provider.reset_stats()
    second_browser = await asyncio.to_thread(world.log_in, "olivia")
    entries = await store.list_tokens("olivia")
    assert [e.token_type for e in entries] == [TokenType.OFFLINE]
    [second] = entries
    assert second.id == first.id
    assert second.token != first.token
    assert second.client_id == world.settings.client_id
    assert second.metadata["loginTime"] != first.metadata["loginTime"]
    assert world.provider.stats()["revocation_requests"] == 1
    assert world.session_of(first_browser)["entry_id"] == first.id
    assert world.session_of(second_browser)["entry_id"] == first.id
    # The replaced token is dead at the provider; the new one works.
    provider = OpenIDProvider(world.settings)
    try:
        with pytest.raises(ReauthRequiredError):
            await provider.refresh(first.token, user_id="olivia")
    finally:
        await provider.close()


async def test_access_tokens_come_from_the_offline_entry_and_it_outlives_sign_out(
    world: OidcWorld, store: TokenVault
) -> None:
    browser = await asyncio.to_thread(world.log_in, "otto")
    provider = OpenIDProvider(world.settings)
    try:
        tokens = AccessTokens(store, provider)
        forced = await tokens.refresh_now("otto")
        assert forced.refreshed
        [entry] = await store.list_tokens("otto")
        assert entry.metadata["refreshCount"] == 1
        named = await tokens.get_access_token("otto", entry_id=entry.id)
        assert named.token == forced.token

        session = world.session_of(browser)
        await asyncio.to_thread(post_from_page, browser, f"{world.app_url}/auth/logout", session)
        whoami = await asyncio.to_thread(browser.get, f"{world.app_url}/")
        assert whoami.json() == {"user_id": None}
        [kept] = await store.list_tokens("otto")
        assert kept.id == entry.id
        assert (await tokens.refresh_now("otto")).refreshed

        browser = await asyncio.to_thread(world.log_in, "otto")
        revoked = await asyncio.to_thread(
            post_from_page,
            browser,
            f"{world.app_url}/auth/offline/revoke",
            world.session_of(browser),
        )
        assert revoked.status_code in (200, 303)
        assert await store.list_tokens("otto") == []
        with pytest.raises(ReauthRequiredError):
            await tokens.get_access_token("otto")
    finally:
        await provider.close()
