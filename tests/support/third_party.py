"""Third-party OpenID providers as real local processes, for integration tests.

Two providers that token-vault did not write, each started as a subprocess on a free
loopback port with its own temp directory:

- ``NanoIdP``: the ``nanoidp`` package (Flask), configured by a ``settings.yaml`` and
  a ``users.yaml`` written for the run and started with ``python -m nanoidp``.
- ``DjangoOAuthToolkit``: django-oauth-toolkit in the minimal Django project
  ``tests/support/dot_project`` (SQLite, fresh RSA key, migrations and seed data at
  start), served by ``dot_project/serve.py``.

Each gives a confidential client (``client_id``/``client_secret``, client_secret_basic)
for the redirect URIs the test passes, users with known passwords (``DEFAULT_USERS``
unless given), the authorization code flow with PKCE S256 and refresh tokens::

    with NanoIdP(redirect_uris=["http://127.0.0.1:8000/auth/callback"]) as op:
        with httpx.Client() as browser:
            callback_url = op.login(authorize_url, "alice", browser)
            # callback_url is the redirect_uri with ?code=...&state=...

``login`` drives the provider's own HTML login (and consent) forms like a browser.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx

from token_vault.service.browser import parse_forms, submit, walk, without_query
from token_vault.service.process import LocalProvider, ProviderProcessError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_USERS",
    "DjangoOAuthToolkit",
    "NanoIdP",
    "ProviderUser",
    "ThirdPartyProvider",
    "ThirdPartyProviderError",
    "login",
]

DOT_PROJECT_DIR = Path(__file__).resolve().parent / "dot_project"


class ThirdPartyProviderError(ProviderProcessError):
    """A third-party provider could not be started or driven."""


@dataclass(frozen=True)
class ProviderUser:
    """A user the provider knows, with the password its login form accepts."""

    username: str
    password: str
    email: str
    given_name: str
    family_name: str

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"


DEFAULT_USERS: tuple[ProviderUser, ...] = (
    ProviderUser("alice", "alice-password", "alice@example.org", "Alice", "Anderson"),
    ProviderUser("bob", "bob-password", "bob@example.org", "Bob", "Brown"),
)


class ThirdPartyProvider(LocalProvider):
    """What both providers share: temp dir, process, readiness, stop, headless login.

    Subclasses write their configuration in ``_prepare`` and name their command in
    ``_command``. ``issuer``, ``client_id``, ``client_secret`` and ``scopes`` are what
    a relying party needs; ``users`` maps usernames to ``ProviderUser``.
    """

    name: ClassVar[str] = "provider"
    package: ClassVar[str] = ""  # the PyPI package that must be installed
    module: ClassVar[str] = ""  # a module of that package
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        users: Sequence[ProviderUser] = DEFAULT_USERS,
        client_id: str = "token-vault",
        client_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not redirect_uris:
            raise ValueError("at least one redirect URI is needed")
        self.redirect_uris = tuple(redirect_uris)
        self.users = {user.username: user for user in users}
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        super().__init__(self.name, host=host, port=port, startup_timeout=startup_timeout)
        self._directory: Path | None = None

    # -- addresses -----------------------------------------------------------

    @classmethod
    def installed(cls) -> bool:
        """Whether the provider's package is importable in this Python."""
        return importlib.util.find_spec(cls.module) is not None

    @property
    def directory(self) -> Path | None:
        """The run's temp directory (configuration, database, keys) while started."""
        return self._directory

    def discovery(self) -> dict[str, Any]:
        """Fetch the provider's OpenID discovery document."""
        resp = httpx.get(self.discovery_url, timeout=10.0)
        resp.raise_for_status()
        document: dict[str, Any] = resp.json()
        return document

    # -- lifecycle -----------------------------------------------------------

    def _prepare(self, directory: Path) -> None:
        """Write the provider's configuration into its fresh temp directory."""
        raise NotImplementedError

    def _command(self, directory: Path) -> list[str]:
        """The argv that runs the provider in the foreground."""
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Self:
        """Start the process and wait (bounded) until discovery names our issuer."""
        if not self.installed():
            raise ThirdPartyProviderError(f"{self.name} needs `pip install {self.package}`")
        self._directory = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        try:
            self._prepare(self._directory)
            self._launch(
                self._command(self._directory), cwd=self._directory, env=self._environment()
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``timeout`` seconds), then remove the temp files."""
        super().stop(timeout)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    # -- headless browser ----------------------------------------------------

    def login(self, authorize_url: str, username: str, browser: httpx.Client | None = None) -> str:
        """Log ``username`` in (with its known password); return the callback URL.

        See ``login`` (the module function). Pass ``browser`` to keep its cookies
        (the provider's session) across calls.
        """
        user = self.users[username]
        if browser is not None:
            return login(browser, authorize_url, user.username, user.password)
        with httpx.Client(timeout=30.0) as fresh:
            return login(fresh, authorize_url, user.username, user.password)


class NanoIdP(ThirdPartyProvider):
    """nanoidp (PyPI ``nanoidp``) run as ``python -m nanoidp --config DIR``.

    The issuer is the origin, ``http://127.0.0.1:<port>``; ``audience`` is the
    access tokens' ``aud`` (ID tokens get the client id). PKCE is required
    (``oauth.require_pkce``). ``rotate_refresh_tokens`` sets
    ``oauth.refresh_token_rotation`` (nanoidp's default is off): on, a rotated-out
    refresh token presented again is refused and revokes its whole family; off, every
    refresh still returns a new refresh token but the old ones stay valid. Passwords
    are compared as plain text (``login.mode: password``). State lives in memory.
    """

    name = "nanoidp"
    package = "nanoidp"
    module = "nanoidp"

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        rotate_refresh_tokens: bool = True,
        audience: str = "token-vault-api",
        **kwargs: Any,
    ) -> None:
        super().__init__(redirect_uris=redirect_uris, **kwargs)
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.audience = audience

    @property
    def issuer(self) -> str:
        return self.base_url

    def settings(self, directory: Path) -> dict[str, Any]:
        """The ``settings.yaml`` document (written as JSON, which YAML reads)."""
        return {
            "config_version": 1,
            "config_validation": "strict",
            "server": {"host": self.host, "port": self.port},
            "oauth": {
                "issuer": self.issuer,
                "audience": self.audience,
                "refresh_token_rotation": self.rotate_refresh_tokens,
                "require_pkce": True,
                "scopes_supported": list(self.scopes),
                "clients": [
                    {
                        "client_id": self.client_id,
                        "client_secret": self.client_secret,
                        "token_endpoint_auth_method": "client_secret_basic",
                        "redirect_uris": list(self.redirect_uris),
                        "description": "token-vault integration tests",
                    }
                ],
            },
            "jwt": {"keys_dir": str(directory / "keys")},
            "session": {"secret_key": secrets.token_urlsafe(32)},
        }

    def users_document(self) -> dict[str, Any]:
        """The ``users.yaml`` document. nanoidp has no name fields: names are attributes."""
        return {
            "config_version": 1,
            "users": {
                user.username: {
                    "password": user.password,
                    "email": user.email,
                    "attributes": {
                        "name": user.name,
                        "given_name": user.given_name,
                        "family_name": user.family_name,
                    },
                }
                for user in self.users.values()
            },
        }

    def _prepare(self, directory: Path) -> None:
        config = directory / "config"
        config.mkdir()
        (config / "settings.yaml").write_text(json.dumps(self.settings(directory), indent=2))
        (config / "users.yaml").write_text(json.dumps(self.users_document(), indent=2))

    def _command(self, directory: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nanoidp",
            "--config",
            str(directory / "config"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--strict-config",
        ]

    def _environment(self) -> dict[str, str]:
        # A developer's NANOIDP_* variables (config dir, bootstrap hook, management
        # secret) must not reach the test's provider.
        return {k: v for k, v in os.environ.items() if not k.startswith(("NANOIDP_", "MOCK_IDP_"))}


class DjangoOAuthToolkit(ThirdPartyProvider):
    """django-oauth-toolkit in ``tests/support/dot_project``, run by its ``serve.py``.

    The issuer is ``http://127.0.0.1:<port>/o``. Applications: the confidential
    authorization-code client (``client_id``/``client_secret``, RS256 ID tokens) and
    a confidential client-credentials one for resource servers
    (``service_client_id``/``service_client_secret``), which may call the RFC 7662
    introspection endpoint with HTTP Basic, or with its own access token for the
    ``introspection`` scope. Refresh tokens rotate (DOT's ``ROTATE_REFRESH_TOKEN``)
    with no grace period; ``reuse_protection`` also revokes the whole token family
    when a rotated-out refresh token is presented again. RP-initiated logout is on
    (``post_logout_redirect_uris``) and deletes the user's tokens. Every login shows
    DOT's consent page unless ``skip_consent``. The admin user is a superuser that may
    log in too.
    """

    name = "django-oauth-toolkit"
    package = "django-oauth-toolkit"
    module = "oauth2_provider"

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        post_logout_redirect_uris: Sequence[str] = (),
        skip_consent: bool = False,
        reuse_protection: bool = False,
        service_client_id: str = "token-vault-resource-server",
        service_client_secret: str | None = None,
        admin: ProviderUser | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(redirect_uris=redirect_uris, **kwargs)
        self.post_logout_redirect_uris = tuple(post_logout_redirect_uris)
        self.skip_consent = skip_consent
        self.reuse_protection = reuse_protection
        self.service_client_id = service_client_id
        self.service_client_secret = service_client_secret or secrets.token_urlsafe(24)
        self.admin = admin or ProviderUser(
            "admin", secrets.token_urlsafe(12), "admin@example.org", "Ada", "Admin"
        )
        self.users.setdefault(self.admin.username, self.admin)

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/o"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/introspect/"

    @property
    def revocation_endpoint(self) -> str:
        """RFC 7009 revocation. Listed in RFC 8414's metadata, not in OpenID discovery,
        so a relying party has to be told (``ProviderSettings.revocation_endpoint``)."""
        return f"{self.issuer}/revoke_token/"

    def seed(self) -> dict[str, Any]:
        """The users and applications ``serve.py`` creates (its ``seed.json``)."""
        users = [
            {
                "username": user.username,
                "password": user.password,
                "email": user.email,
                "first_name": user.given_name,
                "last_name": user.family_name,
                "superuser": user is self.admin,
            }
            for user in self.users.values()
        ]
        applications = [
            {
                "name": "token-vault",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "grant_type": "authorization-code",
                "redirect_uris": list(self.redirect_uris),
                "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
                "skip_authorization": self.skip_consent,
            },
            {
                "name": "resource server",
                "client_id": self.service_client_id,
                "client_secret": self.service_client_secret,
                "grant_type": "client-credentials",
            },
        ]
        return {"users": users, "applications": applications}

    def _prepare(self, directory: Path) -> None:
        (directory / "seed.json").write_text(json.dumps(self.seed(), indent=2))

    def _command(self, directory: Path) -> list[str]:
        command = [
            sys.executable,
            str(DOT_PROJECT_DIR / "serve.py"),
            "--state-dir",
            str(directory),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self.reuse_protection:
            command.append("--reuse-protection")
        return command


# -- headless browser ---------------------------------------------------------


def _unexpected(page: httpx.Response, what: str) -> ThirdPartyProviderError:
    return ThirdPartyProviderError(
        f"{what}: HTTP {page.status_code} at {without_query(str(page.url))}: {page.text[:500]}"
    )


def login(browser: httpx.Client, authorize_url: str, username: str, password: str) -> str:
    """Drive a provider's login and consent pages like a browser; return the callback.

    GETs ``authorize_url`` (a full authorization request), follows redirects, fills
    the form that has a ``password`` field with ``username``/``password``, presses
    ``allow`` on a consent form (django-oauth-toolkit's), and stops at the redirect
    to the request's ``redirect_uri``, returning that URL (with ``code`` and
    ``state``, or ``error``) without fetching it. Cookies stay in ``browser``.
    Raises ``ThirdPartyProviderError`` when the login page comes back (wrong
    password) or a page has no form it understands.
    """
    redirect_uri = parse_qs(urlsplit(authorize_url).query).get("redirect_uri", [""])[0]
    if not redirect_uri:
        raise ValueError("the authorization request has no redirect_uri")
    target = without_query(redirect_uri)
    credentials_sent = False

    def on_page(page: httpx.Response) -> httpx.Response:
        nonlocal credentials_sent
        if page.status_code != 200:
            raise _unexpected(page, "unexpected response during login")
        forms = parse_forms(page.text)
        credentials = next((f for f in forms if "password" in f.names()), None)
        consent = next((f for f in forms if f.submit_value("allow") is not None), None)
        if credentials is not None:
            if credentials_sent:
                raise _unexpected(page, f"the provider did not accept {username!r}")
            credentials_sent = True
            data = {**credentials.data(), "username": username, "password": password}
            return submit(browser, page, credentials, data)
        if consent is not None:
            data = {**consent.data(), "allow": consent.submit_value("allow") or ""}
            return submit(browser, page, consent, data)
        raise _unexpected(page, "no login or consent form found")

    first = browser.get(authorize_url, follow_redirects=False)
    done = walk(
        browser,
        first,
        lambda location: without_query(location) == target,
        on_page,
        error=ThirdPartyProviderError,
    )
    return urljoin(str(done.url), done.headers["location"])
