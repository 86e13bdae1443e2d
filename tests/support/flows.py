"""The login routes, the vault and access tokens against a third-party provider process.

``flow_world(op_class, database_url)`` starts a provider from
``tests/support/third_party.py`` and a small Starlette app that mounts
``RelyingParty``'s login routes on a free port (the pattern of
``tests/support/oidc.py``), with the app's ``/auth/callback`` registered at the
provider as a redirect URI and its ``/`` as a post-logout redirect URI.

The provider is served on ``localhost`` and the app on ``127.0.0.1``: two hosts, as an
app and its identity provider are in production. That keeps the providers' own cookies
(nanoidp's Flask ``session``) apart from the app's session cookie of the same name,
and keeps the providers' token responses, which rightly carry refresh tokens, out of
the secret-leak watch, which reads every response that ``127.0.0.1`` sends as the
project's own (see ``tests/support/leakcheck.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.applications import Starlette

from tests.support.oidc import relying_party_app, serve
from tests.support.third_party import (
    DEFAULT_USERS,
    DjangoOAuthToolkit,
    ProviderUser,
    ThirdPartyProvider,
)
from token_vault import Keyring, TokenVault, generate_key_spec
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
from token_vault.service.browser import parse_forms, submit, walk, without_query
from token_vault.service.process import free_port

__all__ = [
    "FLOW_USERS",
    "PROVIDER_HOST",
    "CountingTransport",
    "FlowWorld",
    "Library",
    "flow_world",
    "query_of",
]

PROVIDER_HOST = "localhost"
APP_HOST = "127.0.0.1"
# Enough users that each test signs in as its own, so the tests share no vault entry.
FLOW_USERS: tuple[ProviderUser, ...] = (
    *DEFAULT_USERS,
    ProviderUser("carol", "carol-password", "carol@example.org", "Carol", "Clark"),
    ProviderUser("dave", "dave-password", "dave@example.org", "Dave", "Davis"),
    ProviderUser("erin", "erin-password", "erin@example.org", "Erin", "Evans"),
)


class CountingTransport(httpx.AsyncBaseTransport):
    """An ``OpenIDProvider`` transport that records every request it sends."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def calls_to(self, url: str) -> int:
        """How many requests went to ``url`` (query ignored)."""
        return sum(1 for r in self.requests if str(r.url.copy_with(query=None)) == url)


class Library(NamedTuple):
    """The library as an app's back end uses it, next to the app under test."""

    vault: TokenVault
    tokens: AccessTokens
    transport: CountingTransport


@dataclass
class FlowWorld:
    """A third-party provider, the app using the login routes, the database, the keys."""

    op: ThirdPartyProvider
    app_url: str
    database_url: str
    keyring: Keyring
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    _discovery: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def settings(self) -> ProviderSettings:
        """The relying party's settings. django-oauth-toolkit's OpenID discovery does not
        name its RFC 7009 endpoint, so it is configured; nanoidp's discovery names it."""
        revocation = (
            self.op.revocation_endpoint if isinstance(self.op, DjangoOAuthToolkit) else None
        )
        return ProviderSettings(
            issuer=self.op.issuer,
            client_id=self.op.client_id,
            client_secret=self.op.client_secret,
            scopes=self.scopes,
            attempts=3,
            backoff=0.05,
            revocation_endpoint=revocation,
        )

    @property
    def discovery(self) -> dict[str, Any]:
        if not self._discovery:
            self._discovery.update(self.op.discovery())
        return self._discovery

    def subject(self, username: str) -> str:
        """The ``sub`` the provider gives ``username``: nanoidp's is the username,
        django-oauth-toolkit's the user's primary key (users are created in order)."""
        if isinstance(self.op, DjangoOAuthToolkit):
            return str(list(self.op.users).index(username) + 1)
        return username

    # -- the browser ---------------------------------------------------------------

    def browser(self) -> httpx.Client:
        return httpx.Client(timeout=30.0, follow_redirects=False)

    def log_in(self, username: str, browser: httpx.Client) -> httpx.Response:
        """app /auth/login -> provider login (and consent) -> app /auth/callback.

        Returns the callback's response."""
        start = browser.get(f"{self.app_url}/auth/login")
        assert start.status_code in (302, 303, 307), start.text
        authorize_url = start.headers["location"]
        assert authorize_url.startswith(self.discovery["authorization_endpoint"] + "?")
        callback_url = self.op.login(authorize_url, username, browser)
        assert callback_url.startswith(f"{self.app_url}/auth/callback?"), callback_url
        return browser.get(callback_url)

    def session_of(self, browser: httpx.Client) -> dict[str, Any]:
        """Decode Starlette's signed session cookie (base64 JSON, then a signature)."""
        cookie = browser.cookies.get("session", domain=APP_HOST)
        if cookie is None:
            return {}
        payload = cookie.split(".")[0]
        decoded: dict[str, Any] = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
        return decoded

    def whoami(self, browser: httpx.Client) -> str | None:
        """The user id the app's session names, as the app itself reads it."""
        user: str | None = browser.get(f"{self.app_url}/").json()["user_id"]
        return user

    def provider_asks_for_password(self, browser: httpx.Client) -> bool:
        """Start a login at the app and say whether the provider shows its password
        form (``False``: it remembers the browser's user). Nothing is submitted."""
        start = browser.get(f"{self.app_url}/auth/login")
        page = walk(browser, start, lambda to: to.startswith(self.app_url), lambda _: None)
        if page.is_redirect:  # straight back to the app (or elsewhere), no page shown
            return False
        return any("password" in form.names() for form in parse_forms(page.text))

    def end_provider_session(self, browser: httpx.Client, url: str) -> tuple[str, bool]:
        """Follow the app's sign-out redirect at the provider, confirming the logout if
        the provider asks; return where the provider sends the browser back and whether
        it asked."""
        back = f"{self.app_url}/"
        asked = False

        def confirm(page: httpx.Response) -> httpx.Response:
            nonlocal asked
            forms = [f for f in parse_forms(page.text) if f.submit_value("allow") is not None]
            if page.status_code != 200 or not forms or asked:
                raise AssertionError(f"HTTP {page.status_code} at {page.url}: {page.text[:300]}")
            asked = True
            data = {**forms[0].data(), "allow": forms[0].submit_value("allow") or ""}
            return submit(browser, page, forms[0], data)

        first = browser.get(url)
        done = walk(browser, first, lambda location: without_query(location) == back, confirm)
        return done.headers["location"], asked

    # -- the provider, directly ----------------------------------------------------

    def refresh_directly(self, refresh_token: str) -> httpx.Response:
        """Use a refresh token at the token endpoint, as the app's client."""
        return httpx.post(
            self.discovery["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(self.op.client_id, self.op.client_secret),
            timeout=30.0,
        )

    def userinfo(self, access_token: str) -> httpx.Response:
        return httpx.get(
            self.discovery["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=30.0,
        )

    # -- the library, outside the app ----------------------------------------------

    @asynccontextmanager
    async def access_tokens(self) -> AsyncIterator[Library]:
        """A vault and ``AccessTokens`` of their own, whose provider calls are counted."""
        transport = CountingTransport()
        vault = await TokenVault.open(self.database_url, self.keyring)
        provider = OpenIDProvider(self.settings, transport=transport)
        try:
            yield Library(vault, AccessTokens(vault, provider), transport)
        finally:
            await provider.close()
            await vault.close()


def query_of(url: str) -> dict[str, str]:
    """A URL's query as single values."""
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def build_app(world: FlowWorld) -> Starlette:
    return relying_party_app(
        world.database_url, world.keyring, world.settings, world.app_url, world.name
    )


@contextmanager
def flow_world(
    op_class: type[ThirdPartyProvider],
    database_url: str,
    scopes: tuple[str, ...] = ("openid", "profile", "email"),
) -> Iterator[FlowWorld]:
    """Start the provider (``op_class``) and the app asking for ``scopes``; yield the
    world; stop both."""
    app_port = free_port(APP_HOST)
    app_url = f"http://{APP_HOST}:{app_port}"
    options: dict[str, Any] = {}
    if issubclass(op_class, DjangoOAuthToolkit):
        options["post_logout_redirect_uris"] = [f"{app_url}/"]
    with op_class(
        redirect_uris=[f"{app_url}/auth/callback"],
        users=FLOW_USERS,
        host=PROVIDER_HOST,
        **options,
    ) as op:
        keyring = Keyring.from_spec(generate_key_spec())
        world = FlowWorld(op, app_url, database_url, keyring, scopes)
        with serve(build_app(world), app_port):
            yield world
