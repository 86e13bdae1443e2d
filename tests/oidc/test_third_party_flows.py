"""The whole token-vault flow against third-party OpenID providers and real PostgreSQL.

For nanoidp and django-oauth-toolkit (``tests/support/third_party.py``), each run as a
real process with the app's callback registered: a browser signs in through the app's
``/auth/login`` and the provider's own forms, the vault keeps the refresh token,
``AccessTokens`` refreshes it, the library reads and deletes it, and ``/auth/logout``
revokes it at the provider. Each test signs in as its own user, so the tests share
the provider and the database but no vault entry.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.flows import FlowWorld, flow_world, query_of
from tests.support.oidc import post_from_page
from tests.support.third_party import DjangoOAuthToolkit, NanoIdP
from token_vault import ReauthRequiredError, TokenType, TokenVault
from token_vault.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow

PROVIDERS = [
    pytest.param(
        NanoIdP,
        id="nanoidp",
        marks=pytest.mark.skipif(not NanoIdP.installed(), reason="pip install nanoidp"),
    ),
    pytest.param(
        DjangoOAuthToolkit,
        id="django-oauth-toolkit",
        marks=pytest.mark.skipif(
            not DjangoOAuthToolkit.installed(), reason="pip install django-oauth-toolkit"
        ),
    ),
]
DEFAULT_REFRESH_TTL = timedelta(days=30)  # LoginSettings' default, for unknown lifetimes


@dataclass(frozen=True)
class Behaviour:
    """Where the providers differ, as these flows meet it."""

    # A standard ``name`` claim (nanoidp's users.yaml names are custom attributes).
    has_name_claim: bool
    # A rotated-out refresh token presented again also revokes its successor.
    reuse_revokes_family: bool
    # A provider session: the next login in the same browser skips the password form.
    remembers_login: bool
    # RP-initiated logout shows a confirmation page (django-oauth-toolkit's
    # OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT, on by default) before redirecting back.
    confirms_logout: bool


BEHAVIOUR = {
    "nanoidp": Behaviour(
        has_name_claim=False,
        reuse_revokes_family=True,
        remembers_login=False,
        confirms_logout=False,
    ),
    "django-oauth-toolkit": Behaviour(
        has_name_claim=True, reuse_revokes_family=False, remembers_login=True, confirms_logout=True
    ),
}


@pytest.fixture(scope="module", params=PROVIDERS)
def world(request: pytest.FixtureRequest, pg_cluster: PgCluster) -> Iterator[FlowWorld]:
    name = f"flows_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    with flow_world(request.param, pg_cluster.url_for(name)) as opened:
        yield opened


@pytest.fixture
async def store(world: FlowWorld) -> AsyncIterator[TokenVault]:
    vault = await TokenVault.open(world.database_url, world.keyring)
    yield vault
    await vault.close()


def parse_stamp(stamp: object) -> datetime:
    assert isinstance(stamp, str)
    assert stamp.endswith("Z")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def assert_refused(resp: httpx.Response) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_grant"


def signed_in(world: FlowWorld, username: str, browser: httpx.Client) -> None:
    done = world.log_in(username, browser)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/"


# -- 1. login ------------------------------------------------------------------------


async def test_login_stores_one_refresh_entry_for_the_providers_subject(
    world: FlowWorld, store: TokenVault
) -> None:
    alice, sub = world.op.users["alice"], world.subject("alice")
    before = datetime.now(UTC)
    with world.browser() as browser:
        signed_in(world, "alice", browser)
        after = datetime.now(UTC)
        session = world.session_of(browser)
        assert world.whoami(browser) == sub

    # The session names the user and the entry, and keeps the ID token for sign-out.
    assert set(session) == {"user_id", "entry_id", "id_token", "csrf"}
    assert session["user_id"] == sub
    entries = await store.list_tokens(sub)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.id == session["entry_id"]
    assert entry.user_id == sub
    assert entry.token_type is TokenType.REFRESH
    assert entry.client_id is None
    assert not entry.needs_reauth
    assert entry.session_state is None  # neither provider sends sid or session_state
    assert entry.token not in json.dumps(session)
    # Neither provider sends refresh_expires_in: nanoidp's refresh tokens are JWTs whose
    # exp is read; django-oauth-toolkit's are opaque, so the expiry is unknown and the
    # default only bounds purging.
    source = entry.metadata["refreshExpiry"]
    if source == "jwt":
        assert after < entry.expires_at < after + DEFAULT_REFRESH_TTL
    else:
        assert source == "unknown"
        assert before + DEFAULT_REFRESH_TTL <= entry.expires_at <= after + DEFAULT_REFRESH_TTL

    # email: in django-oauth-toolkit's ID token; nanoidp's comes from userinfo.
    assert entry.metadata["email"] == alice.email
    assert entry.metadata["username"] == "alice"
    assert entry.metadata["provider"] == world.name
    expected_name = alice.name if BEHAVIOUR[world.name].has_name_claim else None
    assert entry.metadata["name"] == expected_name
    login_time = parse_stamp(entry.metadata["loginTime"])
    assert before - timedelta(milliseconds=1) <= login_time <= after

    # The access token that came with the login is cached, and it is alice's at the
    # provider: the subject stored is the provider's own.
    async with world.access_tokens() as (_, tokens, transport):
        cached = await tokens.get_access_token(sub)
        assert not cached.refreshed
        assert transport.requests == []
    info = world.userinfo(cached.token)
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == sub
    assert info.json()["preferred_username"] == "alice"


# -- 2. a new login ------------------------------------------------------------------


async def test_a_new_login_keeps_the_entry_and_merges_its_metadata(
    world: FlowWorld, store: TokenVault
) -> None:
    sub = world.subject("bob")
    with world.browser() as browser:
        signed_in(world, "bob", browser)
        first = await store.get_refresh_token(sub)
        assert first is not None
        # A refresh adds keys a login does not write (refreshCount, lastRefresh).
        async with world.access_tokens() as (_, tokens, _transport):
            refreshed_access = await tokens.refresh_now(sub)
        refreshed = await store.get_refresh_token(sub)
        assert refreshed is not None
        assert refreshed.metadata["refreshCount"] == 1

        # Again in the same browser (the provider may remember the user).
        signed_in(world, "bob", browser)
        again = await store.get_refresh_token(sub)
        assert world.session_of(browser)["entry_id"] == first.id

    # And in a browser of its own.
    with world.browser() as other:
        signed_in(world, "bob", other)
        assert world.session_of(other)["entry_id"] == first.id
    last = await store.get_refresh_token(sub)

    # The access token of the latest login replaced the cached one.
    async with world.access_tokens() as (_, tokens, transport):
        cached = await tokens.get_access_token(sub)
        assert not cached.refreshed
        assert cached.token != refreshed_access.token
        assert transport.requests == []
    assert world.userinfo(cached.token).json()["sub"] == sub

    assert again is not None
    assert last is not None
    assert [e.id for e in await store.list_tokens(sub)] == [first.id]
    tokens_seen = [first.token, refreshed.token, again.token, last.token]
    assert len(set(tokens_seen)) == len(tokens_seen)
    for entry in (again, last):
        assert entry.id == first.id
        assert entry.created_at == first.created_at
        assert entry.metadata["refreshCount"] == 1  # merged, not replaced
        assert entry.metadata["lastRefresh"] == refreshed.metadata["lastRefresh"]
        assert entry.metadata["email"] == "bob@example.org"
        assert entry.metadata["provider"] == world.name
    first_login = parse_stamp(first.metadata["loginTime"])
    assert first_login < parse_stamp(again.metadata["loginTime"])
    assert parse_stamp(again.metadata["loginTime"]) < parse_stamp(last.metadata["loginTime"])


# -- 3. refresh ----------------------------------------------------------------------


async def test_refresh_rotates_the_stored_token_and_caches_the_access_token(
    world: FlowWorld, store: TokenVault
) -> None:
    sub = world.subject("carol")
    with world.browser() as browser:
        signed_in(world, "carol", browser)
    login_entry = await store.get_refresh_token(sub)
    assert login_entry is not None
    assert "refreshCount" not in login_entry.metadata
    token_endpoint = world.discovery["token_endpoint"]

    async with world.access_tokens() as (_, tokens, transport):
        from_login = await tokens.get_access_token(sub)
        assert not from_login.refreshed
        assert transport.calls_to(token_endpoint) == 0

        fresh = await tokens.refresh_now(sub)
        assert fresh.refreshed
        assert fresh.token != from_login.token
        assert transport.calls_to(token_endpoint) == 1

        # The next caller is served from the cache, without asking the provider.
        calls = len(transport.requests)
        served = await tokens.get_access_token(sub)
        assert not served.refreshed
        assert served.token == fresh.token
        assert served.expires_at == fresh.expires_at
        assert len(transport.requests) == calls

    stored = await store.get_refresh_token(sub)
    assert stored is not None
    assert stored.id == login_entry.id
    assert stored.token != login_entry.token  # both providers rotate refresh tokens
    assert stored.metadata["refreshCount"] == 1
    parse_stamp(stored.metadata["lastRefresh"])
    assert stored.metadata["loginTime"] == login_entry.metadata["loginTime"]
    info = world.userinfo(fresh.token)
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == sub

    # The rotated-out refresh token is refused when used directly.
    assert_refused(world.refresh_directly(login_entry.token))

    # nanoidp takes that reuse as theft and revokes the stored successor too: the
    # next refresh flags the entry for a new login. django-oauth-toolkit (without
    # reuse protection) keeps the successor valid.
    async with world.access_tokens() as (_, tokens, _transport):
        if BEHAVIOUR[world.name].reuse_revokes_family:
            with pytest.raises(ReauthRequiredError) as refused:
                await tokens.refresh_now(sub)
            assert refused.value.reason == "invalid_grant"
            flagged = await store.get_refresh_token(sub)
            assert flagged is not None
            assert flagged.needs_reauth
        else:
            assert (await tokens.refresh_now(sub)).refreshed
            counted = await store.get_refresh_token(sub)
            assert counted is not None
            assert counted.metadata["refreshCount"] == 2

    # Signing in again mends the entry either way: same id, no flag, a working token.
    with world.browser() as browser:
        signed_in(world, "carol", browser)
    mended = await store.get_refresh_token(sub)
    assert mended is not None
    assert mended.id == login_entry.id
    assert not mended.needs_reauth
    async with world.access_tokens() as (_, tokens, _transport):
        assert (await tokens.refresh_now(sub)).refreshed


# -- 4. the library ------------------------------------------------------------------


async def test_library_reads_and_deletes_the_users_entry(
    world: FlowWorld, store: TokenVault
) -> None:
    sub = world.subject("dave")
    with world.browser() as browser:
        signed_in(world, "dave", browser)
        entry_id = world.session_of(browser)["entry_id"]

        entry = await store.get_refresh_token(sub)
        assert entry is not None
        assert entry.id == entry_id
        assert entry.user_id == sub
        assert entry.token_type is TokenType.REFRESH
        assert await store.retrieve(entry_id) == entry
        assert await store.list_tokens(sub) == [entry]
        assert await store.list_tokens(sub, TokenType.REFRESH) == [entry]
        assert await store.list_tokens(sub, "offline") == []
        other = world.subject("alice")
        assert entry_id not in [e.id for e in await store.list_tokens(other)]
        assert await store.get_refresh_token(f"nobody-{secrets.token_hex(4)}") is None

        # delete_user of one type leaves the other; then everything goes.
        assert await store.delete_user(sub, token_type=TokenType.OFFLINE) == 0
        assert await store.get_refresh_token(sub) == entry
        assert await store.delete_user(sub) == 1
        assert await store.get_refresh_token(sub) is None
        assert await store.retrieve(entry_id) is None
        assert await store.list_tokens(sub) == []
        assert await store.delete_user(sub) == 0

        async with world.access_tokens() as (_, tokens, transport):
            with pytest.raises(ReauthRequiredError) as missing:
                await tokens.get_access_token(sub)
            assert missing.value.reason == "no_refresh_token"
            assert transport.requests == []

        # Deleting is the vault's business only: the provider still honours the token.
        assert world.refresh_directly(entry.token).status_code == 200

        # A session whose entry is gone signs out cleanly.
        out = post_from_page(browser, f"{world.app_url}/auth/logout", world.session_of(browser))
        assert out.status_code == 303
        assert world.whoami(browser) is None


# -- 5. sign-out ---------------------------------------------------------------------


async def test_sign_out_revokes_and_deletes_the_entry_and_ends_the_provider_session(
    world: FlowWorld, store: TokenVault
) -> None:
    sub = world.subject("erin")
    with world.browser() as browser:
        signed_in(world, "erin", browser)
        id_token = world.session_of(browser)["id_token"]
        entry = await store.get_refresh_token(sub)
        assert entry is not None

        out = post_from_page(browser, f"{world.app_url}/auth/logout", world.session_of(browser))
        assert out.status_code == 303, out.text
        target = out.headers["location"]
        end_session = world.discovery["end_session_endpoint"]
        assert target.startswith(end_session + "?")
        assert query_of(target) == {
            "client_id": world.op.client_id,
            "post_logout_redirect_uri": f"{world.app_url}/",
            "id_token_hint": id_token,
        }
        assert world.session_of(browser) == {}
        assert world.whoami(browser) is None

        # The entry is gone, and the provider was told before the browser gets there.
        assert await store.get_refresh_token(sub) is None
        assert await store.list_tokens(sub) == []
        assert_refused(world.refresh_directly(entry.token))

        # The provider takes the end-session request as the app built it (django-oauth-
        # toolkit asks the user to confirm: OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT is on
        # by default), ends its own session and sends the browser back to the app.
        behaviour = BEHAVIOUR[world.name]
        assert world.provider_asks_for_password(browser) != behaviour.remembers_login
        back, asked = world.end_provider_session(browser, target)
        assert back == f"{world.app_url}/"
        assert asked == behaviour.confirms_logout
        assert world.provider_asks_for_password(browser)
