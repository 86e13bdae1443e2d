"""A real OpenID provider process and a small Starlette app using the login routes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
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

from tests.support import ROOT
from tests.support.databases import Databases
from token_vault import Keyring, TokenVault
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
from token_vault.oidc.routes import LoginSettings, RelyingParty, login_routes
from token_vault.service.devprovider import DevProvider, free_port, login
from token_vault.storage import open_backend
from token_vault.storage.record import StoredRow
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

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


def relying_party_app(
    database_url: str,
    keyring: Keyring,
    settings: ProviderSettings,
    app_url: str,
    provider_name: str,
) -> Starlette:
    """A small app with the login routes and a ``/`` that says who is signed in."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        vault = await TokenVault.open(database_url, keyring)
        provider = OpenIDProvider(settings)
        access = AccessTokens(vault, provider)
        login = LoginSettings(base_url=app_url, provider_name=provider_name)
        app.state.rp = RelyingParty(vault, provider, access, login)
        yield
        await provider.close()
        await vault.close()

    async def whoami(request: Request) -> Response:
        user = RelyingParty.current_user(request)
        return JSONResponse({"user_id": user.user_id if user else None})

    routes = [*login_routes(lambda request: request.app.state.rp), Route("/", whoami)]
    middleware = [Middleware(SessionMiddleware, secret_key=secrets.token_urlsafe(32))]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def build_app(world: OidcWorld) -> Starlette:
    return relying_party_app(
        world.database_url, world.keyring, world.settings, world.app_url, "devprovider"
    )


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
def world_in_fresh_database(
    pg_cluster: PgCluster,
    tmp: Path,
    scopes: tuple[str, ...] = ("openid", "profile", "email"),
    **provider_options: Any,
) -> Iterator[OidcWorld]:
    """The provider (``provider_options`` go to :class:`DevProvider`), the app asking for
    ``scopes``, and a freshly migrated PostgreSQL database of their own."""
    database_url = Databases(pg_cluster, tmp).fresh("postgresql")
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


async def due_for_refresh(world: OidcWorld, vault: TokenVault, user_id: str) -> None:
    """Log ``user_id`` in through the app, then drop the access token the login cached:
    the user's next access-token call refreshes at the provider."""
    await asyncio.to_thread(world.log_in, user_id)
    await expire_cached_access_token(vault, user_id)


async def stored_row(database_url: str, user_id: str) -> StoredRow | None:
    """The user's refresh row as storage holds it (lease columns included)."""
    backend = await open_backend(DatabaseURL.parse(database_url))
    try:
        return await backend.fetch_refresh(user_id)
    finally:
        await backend.close()


def assert_row_untouched(before: StoredRow | None, after: StoredRow | None) -> None:
    """After a refresh that failed, the row is the one from before it: the same sealed
    token, metadata and update time, no lease left behind, no re-login asked for."""
    # Plain asserts (pytest rewrites test modules, not this one), so each says what failed.
    assert before is not None, "no row before the refresh"
    assert after is not None, "the row is gone after the refresh"
    kept = ("sealed", "metadata", "updated_at")
    changed = [name for name in kept if getattr(after, name) != getattr(before, name)]
    assert not changed, f"the row changed: {', '.join(changed)}"
    assert after.lease_owner is None, "the lease was left behind"
    assert not after.needs_reauth, "the row asks for a new login"


async def userinfo_status(world: OidcWorld, access_token: str) -> int:
    """The provider's answer to the access token at its userinfo endpoint: 200 if it works."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            world.provider.userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"}
        )
    return response.status_code


async def run_access_workers(
    world: OidcWorld, user_id: str, *extra_envs: dict[str, str], calls: int, start_at: float
) -> list[dict[str, Any]]:
    """One ``tests.support.access_worker`` process per ``extra_envs``, each making ``calls``
    access-token calls for ``user_id`` at ``start_at`` (``time.time()``), or ``AFTER``
    seconds later; the rest of an extra env is that worker's own settings. Their JSON
    reports, in order."""
    base = {
        **os.environ,
        "WORKER_DATABASE_URL": world.database_url,
        "WORKER_KEYS": world.keyring.to_spec(),
        "WORKER_ISSUER": world.provider.issuer,
        "WORKER_CLIENT_ID": CLIENT_ID,
        "WORKER_CLIENT_SECRET": CLIENT_SECRET,
        "WORKER_USER": user_id,
        "WORKER_CALLS": str(calls),
    }
    processes = []
    for extra in extra_envs:
        own = {name: value for name, value in extra.items() if name != "AFTER"}
        start = start_at + float(extra.get("AFTER", "0"))
        env = {**base, "WORKER_START_AT": str(start), **own}
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.access_worker",
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outputs = [await process.communicate() for process in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
    return [json.loads(out) for out, _ in outputs]


def post_from_page(browser: httpx.Client, url: str, session: dict[str, Any]) -> httpx.Response:
    """POST a form the way the app's own page does: with the session's CSRF token."""
    return browser.post(url, data={"csrf": session["csrf"]}, follow_redirects=False)
