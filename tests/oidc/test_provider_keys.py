"""The provider's keys: fetched once, re-fetched only for an unknown kid, once at a time,
and never faster than every 30 s, even when the fetch fails."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from token_vault import OpenIDProvider, ProviderSettings
from token_vault.errors import ProviderResponseError

ISSUER = "https://op.example.test/realms/keys"


class KeyServer:
    """Discovery and JWKS on a MockTransport, counting JWKS fetches."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.jwks_fetches = 0
        self.fail = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": f"{ISSUER}/certs"})
        if path.endswith("/certs"):
            self.jwks_fetches += 1
            if self.fail:
                return httpx.Response(503)
            return httpx.Response(200, json=KeySet([self.key]).as_dict(private=False))
        return httpx.Response(404)

    def token(self, kid: str = "k1", key: RSAKey | None = None) -> str:
        claims = {"iss": ISSUER, "exp": int(time.time()) + 60}
        return jwt.encode({"alg": "RS256", "kid": kid}, claims, key or self.key)


@pytest.fixture
async def server_and_provider() -> tuple[KeyServer, OpenIDProvider]:
    server = KeyServer()
    settings = ProviderSettings(ISSUER, "client", "secret", attempts=1)
    return server, OpenIDProvider(settings, transport=httpx.MockTransport(server.handle))


async def test_junk_and_bad_signatures_never_refetch_the_keys(
    server_and_provider: tuple[KeyServer, OpenIDProvider],
) -> None:
    server, provider = server_and_provider
    assert (await provider.decode_jwt(server.token())).claims["iss"] == ISSUER
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    junk = ["garbage", "a.b.c", server.token(key=other)] * 20
    results = await asyncio.gather(
        *(provider.decode_jwt(token) for token in junk), return_exceptions=True
    )
    assert all(isinstance(r, ProviderResponseError) for r in results)
    assert server.jwks_fetches == 1
    await provider.close()


async def test_an_unknown_kid_refetches_once_for_fifty_callers(
    server_and_provider: tuple[KeyServer, OpenIDProvider],
) -> None:
    server, provider = server_and_provider
    await provider.key_set()
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    server.key = rotated  # the provider rotated its signing key
    results = await asyncio.gather(
        *(provider.decode_jwt(server.token("k2", rotated)) for _ in range(50))
    )
    assert len(results) == 50
    assert server.jwks_fetches == 2
    # Unknown kids that never appear do not refetch again within 30 s, failing or not.
    server.fail = True
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k9"})
    for _ in range(20):
        with pytest.raises(ProviderResponseError):
            await provider.decode_jwt(server.token("k9", stranger))
    assert server.jwks_fetches == 2
    await provider.close()
