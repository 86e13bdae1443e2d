"""Login and refresh against a real OpenID provider process (oidc-provider, Keycloak-like)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.support.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    OidcWorld,
    assert_row_untouched,
    due_for_refresh,
    expire_cached_access_token,
    post_from_page,
    run_access_workers,
    stored_row,
    userinfo_status,
    world_in_fresh_database,
)
from token_vault import ProviderUnavailableError, ReauthRequiredError, TokenType, TokenVault
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider
from token_vault.service.devprovider import logout as provider_logout
from token_vault.testing.pgcluster import PgCluster


@pytest.fixture(scope="module")
def world(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcWorld]:
    with world_in_fresh_database(
        pg_cluster, tmp_path_factory.mktemp("oidc"), access_token_ttl=300, refresh_token_ttl=3600
    ) as opened:
        yield opened


@pytest.fixture
async def provider(world: OidcWorld) -> AsyncIterator[OpenIDProvider]:
    client = OpenIDProvider(world.settings)
    yield client
    await client.close()


@pytest.fixture
def tokens(store: TokenVault, provider: OpenIDProvider) -> AccessTokens:
    return AccessTokens(store, provider)


async def log_in(world: OidcWorld, username: str) -> httpx.Client:
    return await asyncio.to_thread(world.log_in, username)


async def refresh_directly(world: OidcWorld, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            world.provider.token_endpoint,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )


async def all_rows(store: TokenVault, *users: str) -> list[tuple[Any, ...]]:
    rows = []
    for user in users:
        for entry in await store.list_tokens(user):
            rows.append(
                (
                    entry.id,
                    entry.token_type,
                    entry.token,
                    entry.session_state,
                    entry.updated_at,
                    json.dumps(entry.metadata, sort_keys=True),
                )
            )
    return sorted(rows)


# -- login ---------------------------------------------------------------------------


async def test_login_stores_one_refresh_entry_with_session_metadata_and_expiry(
    world: OidcWorld, store: TokenVault
) -> None:
    before = datetime.now(UTC)
    browser = await log_in(world, "alice")
    session = world.session_of(browser)
    # The user's own ID token rides along for sign-out's id_token_hint; no other token.
    assert set(session) == {"user_id", "entry_id", "id_token", "csrf"}
    entries = await store.list_tokens("alice")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.token not in json.dumps(session)
    assert entry.id == session["entry_id"]
    assert entry.token_type is TokenType.REFRESH
    assert entry.token not in json.dumps(session)
    assert entry.session_state
    assert entry.metadata["email"] == "alice@example.test"
    assert entry.metadata["name"] == "alice"
    assert entry.metadata["provider"] == "devprovider"
    login_time = datetime.fromisoformat(entry.metadata["loginTime"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= login_time <= datetime.now(UTC)
    # refresh_expires_in is 3,600 s at this provider
    expected = login_time + timedelta(seconds=3600)
    assert abs((entry.expires_at - expected).total_seconds()) < 5
    assert entry.access_expires_at is not None


async def test_second_login_keeps_the_entry_id(world: OidcWorld, store: TokenVault) -> None:
    await log_in(world, "bob")
    first = await store.get_refresh_token("bob")
    await log_in(world, "bob")
    second = await store.get_refresh_token("bob")
    assert first is not None
    assert second is not None
    assert second.id == first.id
    assert second.token != first.token
    assert len(await store.list_tokens("bob")) == 1


# -- refresh -------------------------------------------------------------------------


async def test_cached_access_token_is_served_without_the_provider(
    world: OidcWorld, store: TokenVault, tokens: AccessTokens
) -> None:
    await log_in(world, "cache-user")
    world.provider.reset_stats()
    first = await tokens.get_access_token("cache-user")
    second = await tokens.get_access_token("cache-user")
    assert first.token == second.token
    assert not first.refreshed
    assert world.provider.stats()["token_requests"] == {}
    assert await userinfo_status(world, first.token) == 200


async def test_refresh_rotates_and_stores_the_new_token(
    world: OidcWorld, store: TokenVault, tokens: AccessTokens
) -> None:
    await log_in(world, "carol")
    before = await store.get_refresh_token("carol")
    assert before is not None
    await expire_cached_access_token(store, "carol")
    fresh = await tokens.get_access_token("carol")
    assert fresh.refreshed
    assert await userinfo_status(world, fresh.token) == 200
    after = await store.get_refresh_token("carol")
    assert after is not None
    assert after.id == before.id
    assert after.token != before.token
    assert after.metadata["refreshCount"] == 1
    assert after.metadata["lastRefresh"]
    assert after.metadata["email"] == "carol@example.test"
    again = await tokens.refresh_now("carol")
    assert again.token != fresh.token
    latest = await store.get_refresh_token("carol")
    assert latest is not None
    assert latest.metadata["refreshCount"] == 2
    # The rotated-out token is now refused by the provider.
    reused = await refresh_directly(world, before.token)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


@pytest.mark.slow
async def test_hundred_calls_from_four_processes_make_one_refresh(
    world: OidcWorld, store: TokenVault
) -> None:
    await due_for_refresh(world, store, "dave")
    world.provider.reset_stats()
    start_at = time.time() + 8
    alike: list[dict[str, str]] = [{} for _ in range(4)]
    results = await run_access_workers(world, "dave", *alike, calls=25, start_at=start_at)
    assert time.time() > start_at  # every worker waited for the common start
    tokens = [token for result in results for token in result["tokens"]]
    errors = [error for result in results for error in result["errors"]]
    assert errors == []
    assert len(tokens) == 100
    assert len(set(tokens)) == 1
    stats = world.provider.stats()
    assert stats["token_requests"] == {"refresh_token": 1}
    assert stats["token_errors"] == {}
    assert await userinfo_status(world, tokens[0]) == 200


async def test_dead_grant_raises_reauth_required_without_retry(
    world: OidcWorld, store: TokenVault, tokens: AccessTokens, provider: OpenIDProvider
) -> None:
    await log_in(world, "erin")
    entry = await store.get_refresh_token("erin")
    assert entry is not None
    assert await provider.revoke(entry.token)
    await expire_cached_access_token(store, "erin")
    world.provider.reset_stats()
    with pytest.raises(ReauthRequiredError) as dead:
        await tokens.get_access_token("erin")
    assert dead.value.reason == "invalid_grant"
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    marked = await store.get_refresh_token("erin")
    assert marked is not None
    assert marked.needs_reauth
    assert marked.token == entry.token
    with pytest.raises(ReauthRequiredError):
        await tokens.get_access_token("erin")
    assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    # A new login clears the flag.
    await log_in(world, "erin")
    revived = await store.get_refresh_token("erin")
    assert revived is not None
    assert not revived.needs_reauth
    assert (await tokens.get_access_token("erin")).token


async def test_provider_5xx_is_not_retried_and_keeps_the_row(
    world: OidcWorld, store: TokenVault, tokens: AccessTokens
) -> None:
    await due_for_refresh(world, store, "frank")
    before = await stored_row(world.database_url, "frank")
    world.provider.reset_stats()
    world.provider.fail_next(503, 10)
    try:
        with pytest.raises(ProviderUnavailableError):
            await tokens.get_access_token("frank")
        # A 5xx may come after the provider rotated the token: never replay it.
        assert world.provider.stats()["token_requests"] == {"refresh_token": 1}
    finally:
        world.provider.reset_stats()
    after = await stored_row(world.database_url, "frank")
    assert_row_untouched(before, after)
    # The provider is back: the same stored token still works.
    assert (await tokens.get_access_token("frank")).refreshed


# -- logout --------------------------------------------------------------------------


async def test_logout_clears_the_entry_and_the_provider_session(
    world: OidcWorld, store: TokenVault
) -> None:
    browser = await log_in(world, "gina")
    entry = await store.get_refresh_token("gina")
    assert entry is not None
    # A GET (a link from anywhere) changes nothing; the page's POST signs out.
    offered = await asyncio.to_thread(browser.get, f"{world.app_url}/auth/logout")
    assert offered.status_code == 200
    assert await store.get_refresh_token("gina") is not None
    forged = await asyncio.to_thread(
        browser.post, f"{world.app_url}/auth/logout", data={"csrf": "guessed"}
    )
    assert forged.status_code == 403
    assert await store.get_refresh_token("gina") is not None
    response = await asyncio.to_thread(
        post_from_page, browser, f"{world.app_url}/auth/logout", world.session_of(browser)
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith(world.provider.end_session_endpoint)
    assert "id_token_hint=" in response.headers["location"]  # no "confirm logout" page
    assert await store.get_refresh_token("gina") is None
    whoami = await asyncio.to_thread(browser.get, f"{world.app_url}/")
    assert whoami.json() == {"user_id": None}
    refused = await refresh_directly(world, entry.token)
    assert refused.json()["error"] == "invalid_grant"


async def test_backchannel_logout_deletes_that_session_and_keeps_offline(
    world: OidcWorld, store: TokenVault
) -> None:
    browser = await log_in(world, "hank")
    await log_in(world, "ivy")
    hank = await store.get_refresh_token("hank")
    assert hank is not None
    assert hank.session_state is not None
    offline_id = await store.store(
        "hank",
        "hank-offline-token",
        token_type="offline",
        expires_at=datetime.now(UTC) + timedelta(days=30),
        session_state=hank.session_state,
    )
    world.provider.reset_stats()
    end_session = world.provider.end_session_endpoint
    await asyncio.to_thread(provider_logout, browser, end_session)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the provider posts the logout token on its own
        if await store.get_refresh_token("hank") is None:
            break
        await asyncio.sleep(0.1)
    assert await store.get_refresh_token("hank") is None
    assert world.provider.stats()["backchannel_logout"]["success"] >= 1
    assert [e.id for e in await store.list_tokens("hank")] == [offline_id]
    assert await store.get_refresh_token("ivy") is not None


def malformed_logout_tokens(world: OidcWorld, sid: str) -> dict[str, str]:
    other_key = RSAKey.generate_key(2048, parameters={"kid": "test-signing"})
    claims = world.logout_claims
    event: dict[str, Any] = {"http://schemas.openid.net/event/backchannel-logout": {}}
    now = int(time.time())
    return {
        "missing iss": world.logout_token(claims(sid=sid, iss=None)),
        "wrong iss": world.logout_token(claims(sid=sid, iss="http://evil.example/realms/x")),
        "missing aud": world.logout_token(claims(sid=sid, aud=None)),
        "wrong aud": world.logout_token(claims(sid=sid, aud="another-client")),
        "missing iat": world.logout_token(claims(sid=sid, iat=None)),
        "expired": world.logout_token(claims(sid=sid, iat=now - 3600, exp=now - 3000)),
        "missing jti": world.logout_token(claims(sid=sid, jti=None)),
        "missing events": world.logout_token(claims(sid=sid, events=None)),
        "wrong event": world.logout_token(claims(sid=sid, events={"urn:other": {}})),
        "no sub or sid": world.logout_token(claims()),
        "nonce": world.logout_token(claims(sid=sid, nonce="n-1")),
        "other key": world.logout_token(claims(sid=sid), key=other_key),
        "not a jwt": "this-is-not-a-jwt",
        "alg none": ".".join(
            [
                _b64({"alg": "none", "typ": "logout+jwt"}),
                _b64({**claims(sid=sid), "events": event}),
                "",
            ]
        ),
    }


def _b64(value: dict[str, Any]) -> str:
    import base64

    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_malformed_logout_tokens_get_400_and_change_nothing(
    world: OidcWorld, store: TokenVault
) -> None:
    await log_in(world, "jack")
    jack = await store.get_refresh_token("jack")
    assert jack is not None
    assert jack.session_state is not None
    sid = jack.session_state
    before = await all_rows(store, "jack")
    statuses = {}
    async with httpx.AsyncClient() as client:
        for name, token in malformed_logout_tokens(world, sid).items():
            response = await client.post(
                f"{world.app_url}/auth/backchannel-logout", data={"logout_token": token}
            )
            statuses[name] = response.status_code
            assert token not in response.text
        missing = await client.post(f"{world.app_url}/auth/backchannel-logout", data={})
        statuses["no logout_token"] = missing.status_code
        assert await all_rows(store, "jack") == before
        assert set(statuses.values()) == {400}, statuses
        assert len(statuses) >= 12
        # The same token, well formed, is accepted once; its replay is refused.
        valid = world.logout_token(world.logout_claims(sid=sid))
        url = f"{world.app_url}/auth/backchannel-logout"
        first = await client.post(url, data={"logout_token": valid})
        assert first.status_code == 200
        assert await store.get_refresh_token("jack") is None
        replay = await client.post(url, data={"logout_token": valid})
        assert replay.status_code == 400
