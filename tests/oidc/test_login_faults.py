"""Sign-in when the provider is away or the callback is forged: the right status, and
nothing of the request echoed back."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.testclient import TestClient

from token_vault import (
    AccessTokens,
    LoginSettings,
    OpenIDProvider,
    ProviderSettings,
    RelyingParty,
    TokenVault,
)
from token_vault.oidc.routes import login_routes
from token_vault.service.process import free_port
from token_vault.storage.url import DatabaseURL
from token_vault.testing import fixed_keyring
from token_vault.vault import schema


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[TokenVault]:
    url = f"sqlite:///{tmp_path / 'login.db'}"
    await schema.upgrade(DatabaseURL.parse(url))
    async with await TokenVault.open(url, fixed_keyring()) as opened:
        yield opened


@pytest.fixture
def client(vault: TokenVault) -> Iterator[TestClient]:
    nobody_there = f"http://127.0.0.1:{free_port()}/realms/gone"
    provider = OpenIDProvider(
        ProviderSettings(nobody_there, "token-vault", "a-secret", attempts=1, timeout=2.0)
    )
    party = RelyingParty(
        vault,
        provider,
        AccessTokens(vault, provider),
        LoginSettings(base_url="http://testserver"),
    )
    app = Starlette(
        routes=login_routes(lambda _: party),
        middleware=[Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32))],
    )
    with TestClient(app) as test_client:
        yield test_client


def test_sign_in_with_the_provider_unreachable_is_503(client: TestClient) -> None:
    response = client.get("/auth/login", follow_redirects=False)
    assert response.status_code == 503
    assert "identity provider is unavailable" in response.text


def test_a_callback_error_is_not_echoed(client: TestClient) -> None:
    hostile = "<script>alert(1)</script>"
    response = client.get(
        "/auth/callback", params={"error": hostile, "state": "x"}, follow_redirects=False
    )
    assert response.status_code == 400
    assert hostile not in response.text
    assert "alert" not in response.text
