"""The service under test: a running app, its provider, its database, and ways to call it."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support.oidc import CLIENT_ID, CLIENT_SECRET
from token_vault import Keyring
from token_vault.service.devprovider import DevProvider, login

CALLER_ID = "token-vault-caller"
CALLER_SECRET = "caller-secret"
PROBLEM = "application/problem+json"


class Service:
    """A running service, its provider, its database, and ways to call it."""

    def __init__(
        self,
        provider: DevProvider,
        url: str,
        database_url: str,
        keys: str,
        signing_key: RSAKey,
        env: dict[str, str],
    ) -> None:
        self.provider = provider
        self.url = url
        self.database_url = database_url
        self.keyring = Keyring.from_spec(keys)
        self.signing_key = signing_key
        self.env = env
        self._tokens: dict[str, str] = {}

    def caller_token(self, scope: str) -> str:
        if scope not in self._tokens:
            response = httpx.post(
                self.provider.token_endpoint,
                data={"grant_type": "client_credentials", "scope": scope},
                auth=(CALLER_ID, CALLER_SECRET),
            )
            response.raise_for_status()
            self._tokens[scope] = response.json()["access_token"]
        return self._tokens[scope]

    def forged_token(
        self, *, key: RSAKey | None = None, header: dict[str, str] | None = None, **claims: Any
    ) -> str:
        """A caller token signed with the provider's key; ``None`` drops a claim."""
        now = int(time.time())
        body = {
            "iss": self.provider.issuer,
            "aud": "token-vault",
            "iat": now,
            "exp": now + 300,
            "client_id": CALLER_ID,
            "scope": "vault:read vault:write vault:delete vault:token",
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        signer = key or self.signing_key
        protected = {"alg": "RS256", "kid": signer.kid, "typ": "at+jwt", **(header or {})}
        return jwt.encode(protected, body, signer)

    def log_in(self, username: str) -> httpx.Client:
        browser = httpx.Client(timeout=30.0)
        start = browser.get(f"{self.url}/auth/login")
        callback = login(browser, start.headers["location"], username)
        done = browser.get(callback.headers["location"])
        assert done.status_code == 303
        return browser


def service_env(database_url: str, keys: str, provider: DevProvider, port: int) -> dict[str, str]:
    return {
        "TOKEN_VAULT_DATABASE_URL": database_url,
        "TOKEN_VAULT_KEYS": keys,
        "TOKEN_VAULT_OIDC_ISSUER": provider.issuer,
        "TOKEN_VAULT_OIDC_CLIENT_ID": CLIENT_ID,
        "TOKEN_VAULT_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "TOKEN_VAULT_SESSION_SECRET": secrets.token_urlsafe(40),
        "TOKEN_VAULT_PORT": str(port),
        "TOKEN_VAULT_MODE": "dev",  # the dev provider's client secret is a known placeholder
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:token-vault:problem:")
    assert "Traceback" not in response.text
    return body
