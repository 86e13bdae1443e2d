"""Run the Keycloak-like dev OpenID provider (``devprovider_node/server.mjs``) as a process.

The provider is a small Node program built on ``oidc-provider``, shipped inside the
package. On first use this module copies it into a user-writable cache directory and
installs its npm packages there (never into the package itself), then starts and stops
it, talks to its test hooks, and drives its login form headlessly so tests can run a
real authorization code flow. It needs Node.js 20 or newer and npm.

Usage::

    with DevProvider() as op:
        with httpx.Client() as browser:
            resp = login(browser, authorize_url, "alice")
            # resp.headers["location"] is the redirect_uri with code and state

It can also be run by hand for dev mode::

    python -m token_vault.service.devprovider --port 8080
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx

from token_vault.service.browser import parse_forms, submit, walk, without_query
from token_vault.service.process import LocalProvider, ProviderProcessError, free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_CALLER_CLIENT_ID",
    "DEFAULT_CALLER_CLIENT_SECRET",
    "DEFAULT_REALM",
    "DEFAULT_WEB_CLIENT_ID",
    "DEFAULT_WEB_CLIENT_SECRET",
    "DevProvider",
    "DevProviderError",
    "cache_dir",
    "devprovider_dir",
    "ensure_installed",
    "free_port",
    "login",
    "logout",
]

DEFAULT_REALM = "token-vault"
DEFAULT_WEB_CLIENT_ID = "token-vault"
DEFAULT_WEB_CLIENT_SECRET = "dev-secret"  # noqa: S105 - public dev-only credential
DEFAULT_CALLER_CLIENT_ID = "token-vault-caller"
DEFAULT_CALLER_CLIENT_SECRET = "caller-secret"  # noqa: S105 - public dev-only credential

_OIDC_PATH = "protocol/openid-connect"
_INSTALLED = Path("node_modules", "oidc-provider", "package.json")  # npm ci completed
_NODE_MAJOR = 20  # oidc-provider 9 needs Node.js 20 or newer
_GET_NODE = (
    "install Node.js {major} or newer with npm (https://nodejs.org/, or your system's "
    "packages, e.g. `apt-get install nodejs npm` or `brew install node`), or set {env} "
    "to the program; or point TOKEN_VAULT_OIDC_ISSUER at an OpenID provider of your own "
    "and dev mode starts none"
)


class DevProviderError(ProviderProcessError):
    """The dev provider could not be installed, started or driven."""


def devprovider_dir() -> Path:
    """The dev provider's files as shipped in the package (``server.mjs``, ``package.json``,
    ``package-lock.json``); env ``TOKEN_VAULT_DEVPROVIDER_DIR`` names another copy."""
    override = os.environ.get("TOKEN_VAULT_DEVPROVIDER_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parent / "devprovider_node"


def cache_dir() -> Path:
    """Where the dev provider runs from, with its npm packages: ``TOKEN_VAULT_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/token-vault``, else ``~/.cache/token-vault``."""
    override = os.environ.get("TOKEN_VAULT_CACHE_DIR")
    if override:
        return Path(override).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "token-vault"


def _executable(name: str, env_var: str) -> str:
    found = os.environ.get(env_var) or shutil.which(name)
    if not found:
        raise DevProviderError(
            f"dev mode runs its OpenID provider on Node.js, and {name!r} was not found on "
            f"PATH: {_GET_NODE.format(major=_NODE_MAJOR, env=env_var)}"
        )
    return found


def _node_executable() -> str:
    """The ``node`` to run the provider with, checked to be new enough."""
    node = _executable("node", "TOKEN_VAULT_NODE")
    try:
        answer = subprocess.run(  # noqa: S603 - fixed argv, resolved node
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise DevProviderError(f"cannot run {node} --version: {exc}") from None
    found = re.match(r"v(\d+)\.", answer)
    if found is None or int(found[1]) < _NODE_MAJOR:
        raise DevProviderError(
            f"{node} is Node.js {answer or '(unknown version)'}; the dev provider needs "
            f"{_NODE_MAJOR} or newer: {_GET_NODE.format(major=_NODE_MAJOR, env='TOKEN_VAULT_NODE')}"
        )
    return node


def ensure_installed(
    directory: Path | None = None, *, progress: Callable[[str], None] | None = None
) -> Path:
    """A runnable copy of the dev provider in :func:`cache_dir`, with its npm packages.

    The copy's directory is named after a hash of ``package.json`` and
    ``package-lock.json``, so other npm packages get another directory; ``server.mjs`` is
    brought up to date on every call. The first call runs ``npm ci`` (saying so through
    ``progress``) in a temporary directory renamed into place when complete; concurrent
    callers (parallel test workers) wait on a file lock. Returns the copy's directory.
    """
    source = (directory or devprovider_dir()).resolve()
    if not (source / "server.mjs").is_file():
        raise DevProviderError(f"no dev provider at {source}")
    manifests = [(source / name).read_bytes() for name in ("package.json", "package-lock.json")]
    digest = hashlib.sha256(b"\0".join(manifests)).hexdigest()[:16]
    cache = cache_dir()
    target = cache / f"devprovider-{digest}"
    if not (target / _INSTALLED).is_file():
        _node_executable()
        npm = _executable("npm", "TOKEN_VAULT_NPM")
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / "devprovider.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (target / _INSTALLED).is_file():
                    _npm_install(npm, source, target, progress)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _copy_if_changed(source / "server.mjs", target / "server.mjs")
    return target


def _npm_install(
    npm: str, source: Path, target: Path, progress: Callable[[str], None] | None
) -> None:
    say = progress or (lambda line: None)
    say(
        "dev provider: installing its npm packages (oidc-provider) into "
        f"{target} with npm ci; first use only..."
    )
    started = time.monotonic()
    building = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(source / name, building / name)
        result = subprocess.run(  # noqa: S603 - fixed argv, resolved npm
            [npm, "ci", "--no-audit", "--no-fund", "--omit=dev"],
            cwd=building,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not (building / _INSTALLED).is_file():
            raise DevProviderError(
                f"npm ci failed (exit {result.returncode}); the first run needs the npm "
                f"registry or npm's cache:\n{result.stderr[-4000:]}"
            )
        shutil.rmtree(target, ignore_errors=True)  # a copy left unfinished by a crash
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"dev provider: installed in {time.monotonic() - started:.0f} s")


def _copy_if_changed(source: Path, target: Path) -> None:
    content = source.read_bytes()
    if target.is_file() and target.read_bytes() == content:
        return
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_bytes(content)
    partial.replace(target)  # atomic: a provider starting meanwhile reads one or the other


class DevProvider(LocalProvider):
    """A running ``devprovider/server.mjs`` process (a context manager).

    Every ``*_ttl`` is in seconds; ``None`` keeps the server default (access 300,
    refresh 1800, id token = access, session 36000). ``clients`` is passed through to
    oidc-provider's ``clients`` configuration; ``None`` means the server's defaults
    (confidential web client ``token-vault``/``dev-secret`` and the service client
    ``token-vault-caller``/``caller-secret``).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        realm: str = DEFAULT_REALM,
        clients: Sequence[Mapping[str, Any]] | None = None,
        access_token_ttl: int | None = None,
        refresh_token_ttl: int | None = None,
        id_token_ttl: int | None = None,
        session_ttl: int | None = None,
        test_hooks: bool = True,
        redirect_uris: Sequence[str] | None = None,
        backchannel_logout_uri: str | None = None,
        resource_scopes: Sequence[str] | None = None,
        audience: str | None = None,
        jwks_path: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        directory: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__("devprovider", host=host, port=port, startup_timeout=startup_timeout)
        self.realm = realm
        self.test_hooks = test_hooks
        self._directory = directory

        env: dict[str, str] = {
            "PORT": str(self.port),
            "HOST": host,
            "REALM": realm,
            "DEVPROVIDER_TEST_HOOKS": "1" if test_hooks else "0",
        }
        if clients is not None:
            env["DEVPROVIDER_CLIENTS"] = json.dumps([dict(c) for c in clients])
        ttls = {
            "ACCESS_TOKEN_TTL": access_token_ttl,
            "REFRESH_TOKEN_TTL": refresh_token_ttl,
            "ID_TOKEN_TTL": id_token_ttl,
            "SESSION_TTL": session_ttl,
        }
        for name, value in ttls.items():
            if value is not None and value <= 0:
                raise ValueError(f"{name.lower()} must be positive")
        optional = {
            **ttls,
            "DEVPROVIDER_REDIRECT_URIS": None if redirect_uris is None else ",".join(redirect_uris),
            "DEVPROVIDER_BACKCHANNEL_LOGOUT_URI": backchannel_logout_uri,
            "DEVPROVIDER_RESOURCE_SCOPES": None
            if resource_scopes is None
            else " ".join(resource_scopes),
            "DEVPROVIDER_AUDIENCE": audience,
            "DEVPROVIDER_JWKS": None if jwks_path is None else str(jwks_path),
        }
        env.update({k: str(v) for k, v in optional.items() if v is not None})
        env.update(extra_env or {})
        self._env = env

    # -- addresses -----------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The issuer, ``http://host:port/realms/<realm>``."""
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/token"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/revoke"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/logout"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/certs"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/{_OIDC_PATH}/userinfo"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until discovery answers (bounded)."""
        directory = ensure_installed(self._directory)
        self._launch(
            [_node_executable(), str(directory / "server.mjs")],
            cwd=directory,
            env={**os.environ, **self._env},
        )
        return self

    # -- test hooks ----------------------------------------------------------

    def _hook(self, method: str, name: str, params: Mapping[str, str] | None = None) -> Any:
        if not self.test_hooks:
            raise DevProviderError("test hooks are disabled for this dev provider")
        resp = httpx.request(method, f"{self.base_url}/__test__/{name}", params=params, timeout=5.0)
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        """Counters since start/reset.

        Keys: ``token_requests`` (by grant_type, including injected failures),
        ``token_requests_total``, ``token_errors`` (non-200 answers by grant_type, not
        counting injected ones), ``injected_failures``, ``revocation_requests``,
        ``introspection_requests``, ``backchannel_logout`` (``success``/``error``),
        ``pending_failures`` (``status``/``count``).
        """
        result: dict[str, Any] = self._hook("GET", "stats")
        return result

    def reset_stats(self) -> None:
        """Zero the counters and cancel pending injected failures."""
        self._hook("POST", "reset")

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Answer the next ``count`` token requests only after ``seconds`` (test hook)."""
        self._hook("POST", "delay", {"ms": str(int(seconds * 1000)), "count": str(count)})

    def fail_next(self, status: int = 503, count: int = 1) -> None:
        """Make the next ``count`` token-endpoint requests answer HTTP ``status``."""
        self._hook("POST", "fail", {"status": str(status), "count": str(count)})


# -- headless browser ---------------------------------------------------------


def _page_error(resp: httpx.Response, what: str) -> DevProviderError:
    return DevProviderError(
        f"{what}: HTTP {resp.status_code} at {without_query(str(resp.url))}: {resp.text[:500]}"
    )


def login(client: httpx.Client, authorize_url: str, username: str) -> httpx.Response:
    """Log ``username`` in through the dev provider's login form, like a browser.

    Starts at ``authorize_url`` (the full authorization request), follows redirects to
    the login form, submits it (any password), submits consent if the provider asks,
    and returns the response that redirects to the relying party's ``redirect_uri``
    without following it: its ``Location`` carries ``code`` and ``state`` (or
    ``error``). Cookies stay in ``client``, so a second call reuses the SSO session.
    """
    query = parse_qs(urlsplit(authorize_url).query)
    redirect_uri = query.get("redirect_uri", [""])[0]
    provider_origin = urlsplit(authorize_url).netloc

    def is_done(location: str) -> bool:
        if redirect_uri:
            return without_query(location) == without_query(redirect_uri)
        return urlsplit(location).netloc != provider_origin

    def on_page(page: httpx.Response) -> httpx.Response:
        if page.status_code != 200:
            raise _page_error(page, "unexpected response during login")
        forms = parse_forms(page.text)
        for form in forms:
            names = form.names()
            data = form.data()
            if "login" in names:
                data["login"] = username
                if "password" in names:
                    data["password"] = "password"  # noqa: S105 - any password is accepted
                return submit(client, page, form, data)
            if data.get("prompt") == "consent":
                return submit(client, page, form, data)
        raise _page_error(page, "no login or consent form found")

    first = client.get(authorize_url, follow_redirects=False)
    return walk(client, first, is_done, on_page, error=DevProviderError)


def logout(
    client: httpx.Client,
    end_session_url: str,
    post_logout_redirect_uri: str | None = None,
) -> httpx.Response:
    """Do an RP-initiated logout and confirm it on the provider's page.

    ``end_session_url`` is the full end-session request (``id_token_hint``,
    ``client_id``, ``post_logout_redirect_uri``...). Returns either the redirect to
    ``post_logout_redirect_uri`` (not followed) or the provider's success page.
    Back-channel logout tokens are sent before this returns.
    """
    target = (
        post_logout_redirect_uri
        or parse_qs(urlsplit(end_session_url).query).get("post_logout_redirect_uri", [""])[0]
    )
    provider_origin = urlsplit(end_session_url).netloc
    confirmed = False

    def is_done(location: str) -> bool:
        if target:
            return without_query(location) == without_query(target)
        return urlsplit(location).netloc != provider_origin

    def on_page(page: httpx.Response) -> httpx.Response | None:
        nonlocal confirmed
        if confirmed:
            return None
        if page.status_code != 200:
            raise _page_error(page, "unexpected response during logout")
        for form in parse_forms(page.text):
            data = form.data()
            if "xsrf" in data:
                data["logout"] = "yes"
                confirmed = True
                return submit(client, page, form, data)
        raise _page_error(page, "no logout confirmation form found")

    first = client.get(end_session_url, follow_redirects=False)
    return walk(client, first, is_done, on_page, error=DevProviderError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dev provider in the foreground until interrupted (dev mode)."""
    parser = argparse.ArgumentParser(prog="python -m token_vault.service.devprovider")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--realm", default=DEFAULT_REALM)
    parser.add_argument("--redirect-uri", action="append", dest="redirect_uris")
    parser.add_argument("--backchannel-logout-uri")
    parser.add_argument("--test-hooks", action="store_true")
    args = parser.parse_args(argv)
    provider = DevProvider(
        host=args.host,
        port=args.port,
        realm=args.realm,
        redirect_uris=args.redirect_uris,
        backchannel_logout_uri=args.backchannel_logout_uri,
        test_hooks=args.test_hooks,
    )
    with provider:
        print(f"dev provider running: issuer {provider.issuer}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while provider.running:
                time.sleep(0.5)
        if not provider.running:
            sys.stderr.write(provider.output())
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
