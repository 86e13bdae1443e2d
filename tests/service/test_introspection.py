"""Opaque caller tokens, checked by RFC 7662 introspection at a real provider
(django-oauth-toolkit, whose access tokens are opaque), answers cached by token hash."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.third_party import DjangoOAuthToolkit
from token_vault import OpenIDProvider, ProviderSettings
from token_vault.service.caller import CallerVerifier
from token_vault.service.problem import AuthError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DjangoOAuthToolkit.installed(), reason="django-oauth-toolkit"),
]


@pytest.fixture(scope="module")
def dot() -> Iterator[DjangoOAuthToolkit]:
    with DjangoOAuthToolkit(redirect_uris=["http://localhost:9/cb"], host="localhost") as op:
        yield op


class Counting(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return await self.real.handle_async_request(request)


def _service_token(dot: DjangoOAuthToolkit, scope: str) -> str:
    response = httpx.post(
        f"{dot.issuer}/token/",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(dot.service_client_id, dot.service_client_secret),
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    assert token.count(".") != 2  # opaque, not a JWT
    return token


async def test_an_opaque_caller_token_is_introspected_once_and_judged(
    dot: DjangoOAuthToolkit,
) -> None:
    counting = Counting()
    provider = OpenIDProvider(
        ProviderSettings(dot.issuer, dot.service_client_id, dot.service_client_secret)
    )
    verifier = CallerVerifier(
        provider,
        audience="token-vault",
        introspection_endpoint=dot.introspection_endpoint,
        introspection_auth=(dot.service_client_id, dot.service_client_secret),
        http=httpx.AsyncClient(transport=counting),
    )
    try:
        token = _service_token(dot, "vault:token")
        caller = await verifier.verify(f"Bearer {token}", "vault:token")
        assert caller.client_id == dot.service_client_id
        assert "vault:token" in caller.scopes
        again = await verifier.verify(f"Bearer {token}", "vault:token")
        assert again == caller
        assert counting.calls == 1  # the second answer came from the cache
        with pytest.raises(AuthError) as lacking:
            await verifier.verify(f"Bearer {token}", "vault:read")
        assert lacking.value.status == 403
        with pytest.raises(AuthError) as unknown:
            await verifier.verify("Bearer not-a-token-the-provider-issued", "vault:token")
        assert unknown.value.status == 401
    finally:
        await verifier.close()
        await provider.close()
