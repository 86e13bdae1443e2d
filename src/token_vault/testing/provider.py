"""A fake OpenID provider on httpx's ``MockTransport``: no process, no network.

For unit tests of code that uses :class:`~token_vault.AccessTokens`: it answers
discovery, the token endpoint's ``refresh_token`` grant (rotating refresh tokens, as
Keycloak does with "Revoke Refresh Token" on) and revocation, counts refreshes, and
fails on demand. It issues no ID tokens. For the real protocol end to end, run a real
provider (the project's own tests use a Node ``oidc-provider`` process).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx

from token_vault.oidc.provider import OpenIDProvider, ProviderSettings

__all__ = ["FakeProvider"]


async def _no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@dataclass
class FakeProvider:
    """Refresh tokens it issued (``issue_refresh_token``) work until used or revoked."""

    issuer: str = "https://op.example.test/realms/test"
    client_id: str = "token-vault"
    client_secret: str = field(default="fake-client-secret", repr=False)
    rotate: bool = True
    access_ttl: int = 300
    refresh_ttl: int = 1800
    refresh_requests: int = 0
    revoked: set[str] = field(default_factory=set, repr=False)
    _valid: dict[str, str] = field(default_factory=dict, repr=False)  # refresh token -> user
    _failures: list[int] = field(default_factory=list, repr=False)

    @property
    def settings(self) -> ProviderSettings:
        return ProviderSettings(
            issuer=self.issuer, client_id=self.client_id, client_secret=self.client_secret
        )

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def provider(self) -> OpenIDProvider:
        """An :class:`OpenIDProvider` talking to this fake (retries without waiting)."""
        return OpenIDProvider(self.settings, transport=self.transport, sleep=_no_sleep)

    def issue_refresh_token(self, user_id: str) -> str:
        """A refresh token the fake will accept once (or until revoked without rotation)."""
        token = f"fake-rt-{secrets.token_urlsafe(24)}"
        self._valid[token] = user_id
        return token

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` token requests with HTTP ``status``."""
        self._failures.extend([status] * times)

    def revoke_all(self) -> None:
        """Kill every grant: the next refresh gets ``invalid_grant``."""
        self.revoked.update(self._valid)
        self._valid.clear()

    # -- the endpoints ---------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        base = self.issuer.rstrip("/")
        url = str(request.url).split("?", 1)[0]
        if request.method == "GET" and url == f"{base}/.well-known/openid-configuration":
            return httpx.Response(200, json=self._discovery(base))
        if request.method == "GET" and url == f"{base}/protocol/openid-connect/certs":
            return httpx.Response(200, json={"keys": []})
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if request.method == "POST" and url == f"{base}/protocol/openid-connect/token":
            return self._token(form)
        if request.method == "POST" and url == f"{base}/protocol/openid-connect/revoke":
            token = form.get("token", "")
            if self._valid.pop(token, None) is not None:
                self.revoked.add(token)
            return httpx.Response(200)
        return httpx.Response(404, json={"error": "not_found"})

    def _discovery(self, base: str) -> dict[str, str]:
        return {
            "issuer": self.issuer,
            "token_endpoint": f"{base}/protocol/openid-connect/token",
            "jwks_uri": f"{base}/protocol/openid-connect/certs",
            "revocation_endpoint": f"{base}/protocol/openid-connect/revoke",
            "authorization_endpoint": f"{base}/protocol/openid-connect/auth",
        }

    def _token(self, form: dict[str, str]) -> httpx.Response:
        if self._failures:
            return httpx.Response(self._failures.pop(0), json={"error": "server_error"})
        if form.get("grant_type") != "refresh_token":
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        self.refresh_requests += 1
        presented = form.get("refresh_token", "")
        user_id = self._valid.get(presented)
        if user_id is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        body: dict[str, object] = {
            "access_token": f"fake-at-{secrets.token_urlsafe(24)}",
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "refresh_expires_in": self.refresh_ttl,
        }
        if self.rotate:
            del self._valid[presented]
            self.revoked.add(presented)
            body["refresh_token"] = self.issue_refresh_token(user_id)
        return httpx.Response(
            200, content=json.dumps(body), headers={"Content-Type": "application/json"}
        )
