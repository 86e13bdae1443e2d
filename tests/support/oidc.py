"""A real OpenID provider process and a small Starlette app using the login routes."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from token_vault import Keyring, TokenVault
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
from token_vault.oidc.routes import LoginSettings, RelyingParty, login_routes
from token_vault.service.devprovider import DevProvider, free_port, login
from token_vault.storage import open_backend
from token_vault.storage.record import StoredRow
from token_vault.storage.url import DatabaseURL

CLIENT_ID = "token-vault"
CLIENT_SECRET = "dev-secret"


@dataclass
class OidcWorld:
    """Everything a login/refresh test needs: provider, app, database, keys."""

    provider: DevProvider
    app_url: str
    database_url: str
    keyring: Keyring
    signing_key: RSAKey
    scopes: tuple[str, ...] = ("openid", "profile", "email")

    @property
    def settings(self) -> ProviderSettings:
        return ProviderSettings(
            issuer=self.provider.issuer,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            scopes=self.scopes,
            attempts=3,
            backoff=0.05,
        )

    def browser(self) -> httpx.Client:
        return httpx.Client(timeout=30.0, follow_redirects=False)

    def log_in(self, username: str, client: httpx.Client | None = None) -> httpx.Client:
        """Log in through the app like a browser: app -> provider form -> app callback."""
        browser = client or self.browser()
        start = browser.get(f"{self.app_url}/auth/login")
        assert start.status_code in (302, 303, 307), start.text
        at_callback = login(browser, start.headers["location"], username)
        done = browser.get(at_callback.headers["location"])
        assert done.status_code == 303, done.text
        return browser

    def session_of(self, browser: httpx.Client) -> dict[str, Any]:
        """Decode Starlette's signed session cookie (base64 JSON, then a signature)."""
        cookie = browser.cookies.get("session", domain="127.0.0.1")
        assert cookie is not None
        payload = cookie.split(".")[0]
        decoded: dict[str, Any] = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
        return decoded

    def logout_token(
        self,
        claims: dict[str, Any],
        *,
        key: RSAKey | None = None,
        header: dict[str, Any] | None = None,
    ) -> str:
        signer = key or self.signing_key
        head = {"alg": "RS256", "kid": signer.kid, "typ": "logout+jwt", **(header or {})}
        return jwt.encode(head, claims, signer)

    def logout_claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.provider.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 120,
            "jti": secrets.token_hex(12),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}


def write_jwks(path: Path) -> RSAKey:
    key = RSAKey.generate_key(
        2048, parameters={"kid": "test-signing", "use": "sig", "alg": "RS256"}
    )
    path.write_text(json.dumps(KeySet([key]).as_dict(private=True)))
    return key


def build_app(world: OidcWorld) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        vault = await TokenVault.open(world.database_url, world.keyring)
        provider = OpenIDProvider(world.settings)
        access = AccessTokens(vault, provider)
        settings = LoginSettings(base_url=world.app_url, provider_name="devprovider")
        app.state.rp = RelyingParty(vault, provider, access, settings)
        yield
        await provider.close()
        await vault.close()

    async def whoami(request: Request) -> Response:
        user = RelyingParty.current_user(request)
        return JSONResponse({"user_id": user.user_id if user else None})

    routes = [*login_routes(lambda request: request.app.state.rp), Route("/", whoami)]
    middleware = [Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32))]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


@contextmanager
def serve(app: Starlette, port: int) -> Iterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test app did not start")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def oidc_world(
    database_url: str,
    tmp: Path,
    scopes: tuple[str, ...] = ("openid", "profile", "email"),
    **provider_options: Any,
) -> Iterator[OidcWorld]:
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    signing_key = write_jwks(tmp / "jwks.json")
    provider = DevProvider(
        redirect_uris=[f"{app_url}/auth/callback"],
        backchannel_logout_uri=f"{app_url}/auth/backchannel-logout",
        jwks_path=tmp / "jwks.json",
        **provider_options,
    )
    with provider:
        world = OidcWorld(
            provider, app_url, database_url, Keyring.from_spec(_spec()), signing_key, scopes
        )
        with serve(build_app(world), app_port):
            yield world


def _spec() -> str:
    from token_vault import generate_key_spec

    return generate_key_spec()


async def expire_cached_access_token(vault: TokenVault, user_id: str) -> None:
    """Drop the cached access token (a login cached one), so the next call refreshes."""
    entry = await vault.get_refresh_token(user_id)
    assert entry is not None
    assert entry.access_expires_at is not None
    assert await vault.forget_access_token(entry.id)


async def stored_row(database_url: str, user_id: str) -> StoredRow | None:
    """The user's refresh row as storage holds it (lease columns included)."""
    backend = await open_backend(DatabaseURL.parse(database_url))
    try:
        return await backend.fetch_refresh(user_id)
    finally:
        await backend.close()
