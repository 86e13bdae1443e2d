"""Provider faults the real provider cannot produce on demand, injected at the HTTP seam.

Requests go to the real provider process through a transport that, for the token
endpoint only, times out, answers garbage, or swaps in an ID token signed with a key the
provider does not have. In every case: the typed error, and the stored row unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support import ROOT
from tests.support.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    OidcWorld,
    assert_row_untouched,
    due_for_refresh,
    stored_row,
)
from token_vault import (
    AccessTokens,
    OpenIDProvider,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
    TokenVault,
)


class FaultyTransport(httpx.AsyncBaseTransport):
    """Forwards to the real provider; the token endpoint misbehaves as told."""

    def __init__(self, mode: str, provider_key: RSAKey) -> None:
        self.mode = mode
        self.token_calls = 0
        self._real = httpx.AsyncHTTPTransport()
        self._provider_key = provider_key
        # Same kid as the provider's key, different material: only the signature differs.
        self._wrong_key = RSAKey.generate_key(2048, parameters={"kid": "test-signing"})

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/protocol/openid-connect/token"):
            return await self._real.handle_async_request(request)
        self.token_calls += 1
        if self.mode == "timeout":
            raise httpx.ReadTimeout("token endpoint timed out", request=request)
        if self.mode == "connect-error":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "garbage":
            return httpx.Response(200, content=b"<html>gateway</html>", request=request)
        if self.mode == "json-array":
            return httpx.Response(200, json=["not", "an", "object"], request=request)
        if self.mode == "no-access-token":
            return httpx.Response(200, json={"token_type": "Bearer"}, request=request)
        response = await self._real.handle_async_request(request)
        await response.aread()
        body = json.loads(response.content)
        if self.mode == "wrong-key-id-token":
            claims = jwt.decode(body["id_token"], self._provider_key).claims
            body["id_token"] = jwt.encode(
                {"alg": "RS256", "kid": "test-signing"}, claims, self._wrong_key
            )
        return httpx.Response(response.status_code, json=body, request=request)

    async def aclose(self) -> None:
        await self._real.aclose()


@pytest.mark.parametrize(
    ("mode", "error", "calls"),
    [
        # A timeout may hide an answer: the token is never sent twice.
        ("timeout", ProviderUnavailableError, 1),
        # A connection that was never made is retried (attempts = 3).
        ("connect-error", ProviderUnavailableError, 3),
        ("garbage", ProviderResponseError, 1),
        ("json-array", ProviderResponseError, 1),
        ("no-access-token", ProviderResponseError, 1),
        ("wrong-key-id-token", ProviderResponseError, 1),
    ],
)
async def test_provider_fault_gives_its_typed_error_and_keeps_the_row(
    world: OidcWorld, store: TokenVault, mode: str, error: type[Exception], calls: int
) -> None:
    user = f"fault-{mode}"
    await due_for_refresh(world, store, user)
    before = await stored_row(world.database_url, user)
    transport = FaultyTransport(mode, world.signing_key)
    provider = OpenIDProvider(world.settings, transport=transport)
    try:
        with pytest.raises(error):
            await AccessTokens(store, provider).get_access_token(user)
    finally:
        await provider.close()
    assert transport.token_calls == calls
    after = await stored_row(world.database_url, user)
    assert_row_untouched(before, after)
    if mode != "wrong-key-id-token":
        # Nothing reached the provider's token endpoint, so the stored token still works.
        good = OpenIDProvider(world.settings)
        try:
            assert (await AccessTokens(store, good).get_access_token(user)).refreshed
        finally:
            await good.close()


CRASH_WORKER = """
import asyncio, os
from datetime import timedelta
from token_vault import Keyring, TokenVault, AccessTokens, OpenIDProvider, ProviderSettings

async def main():
    env = os.environ
    vault = await TokenVault.open(env["W_DB"], Keyring.from_spec(env["W_KEYS"]))
    provider = OpenIDProvider(ProviderSettings(env["W_ISSUER"], env["W_ID"], env["W_SECRET"]))
    def die(outcome, seconds):
        if outcome == "ok":
            os._exit(9)  # the provider answered; the process dies before storing anything
    lease = timedelta(seconds=2)
    await AccessTokens(vault, provider, observer=die, lease=lease).get_access_token(env["W_USER"])

asyncio.run(main())
"""


@pytest.mark.slow
async def test_crash_between_provider_and_database_never_loops(
    world: OidcWorld, store: TokenVault
) -> None:
    user = "crash-user"
    await due_for_refresh(world, store, user)
    world.provider.reset_stats()
    env = {
        **os.environ,
        "W_DB": world.database_url,
        "W_KEYS": world.keyring.to_spec(),
        "W_ISSUER": world.provider.issuer,
        "W_ID": CLIENT_ID,
        "W_SECRET": CLIENT_SECRET,
        "W_USER": user,
    }
    crashed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_WORKER, env=env, cwd=ROOT
    )
    assert await crashed.wait() == 9
    leased = await stored_row(world.database_url, user)
    assert leased is not None
    assert leased.lease_owner is not None  # the dead process's lease is still there
    # A restarted process waits for the dead one's lease to lapse, then tries once.
    provider = OpenIDProvider(world.settings)
    tokens = AccessTokens(store, provider, wait=timedelta(seconds=30))
    try:
        outcome: str
        try:
            await tokens.get_access_token(user)
            outcome = "usable"
        except ReauthRequiredError:
            outcome = "needs-login"
        again: str
        try:
            await tokens.get_access_token(user)
            again = "usable"
        except ReauthRequiredError:
            again = "needs-login"
    finally:
        await provider.close()
    assert outcome == again
    entry = await store.get_refresh_token(user)
    assert entry is not None
    assert entry.needs_reauth == (outcome == "needs-login")
    calls = world.provider.stats()["token_requests"].get("refresh_token", 0)
    assert 1 <= calls <= 3
    print(f"after the crash: {outcome}, {calls} provider refresh call(s) in all")
