"""Dev mode: everything a newcomer needs on a fresh machine, started by one command.

Migrates the embedded SQLite file, keeps a dev key and a session secret in ``var/``
(dev only, with a warning), starts the local Keycloak-like dev provider unless
``TOKEN_VAULT_OIDC_ISSUER`` names a real one, and serves on http://127.0.0.1:8000.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path

import uvicorn

from token_vault.crypto.keyring import generate_key_spec
from token_vault.service.app import AUTH_PREFIX, create_app
from token_vault.service.devprovider import (
    DEFAULT_CALLER_CLIENT_ID,
    DEFAULT_CALLER_CLIENT_SECRET,
    DEFAULT_WEB_CLIENT_ID,
    DEFAULT_WEB_CLIENT_SECRET,
)
from token_vault.service.logs import configure_logging
from token_vault.service.settings import SCOPES, ServiceSettings
from token_vault.vault import schema

__all__ = ["run_dev"]


def _say(line: str = "") -> None:
    print(line, file=sys.stderr, flush=True)


def _secret_file(path: Path, make: str, what: str) -> Path:
    """A dev secret, created readable by its owner only (0600, never over another file)."""
    if path.exists() and path.read_text().strip():
        return path
    path.unlink(missing_ok=True)  # an empty leftover
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(make + "\n")
    _say(f"warning: generated a DEV {what} in {path}; never use it in production")
    return path


def _configured(name: str) -> bool:
    """Whether the environment sets ``TOKEN_VAULT_<name>`` or ``TOKEN_VAULT_<name>_FILE``."""
    return any(os.environ.get(f"TOKEN_VAULT_{name}{suffix}") for suffix in ("", "_FILE"))


def _try_command(token_endpoint: str, base_url: str) -> str:
    scope = f"{SCOPES['read']} {SCOPES['token']}"
    caller = f"{DEFAULT_CALLER_CLIENT_ID}:{DEFAULT_CALLER_CLIENT_SECRET}"
    get_token = (
        f"TOKEN=$(curl -s -u {caller} -d grant_type=client_credentials "
        f"-d {shlex.quote('scope=' + scope)} {token_endpoint} "
        "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    call = f'curl -s -H "Authorization: Bearer $TOKEN" {base_url}/v1/users/alice/tokens'
    return f"{get_token}\n  {call}"


def run_dev(*, host: str = "127.0.0.1", port: int = 8000, var: Path = Path("var")) -> None:
    """Run the service in dev mode until Ctrl-C."""
    configure_logging(os.environ.get("TOKEN_VAULT_LOG_LEVEL", "INFO"))
    var.mkdir(mode=0o700, parents=True, exist_ok=True)
    var.chmod(0o700)
    base_url = f"http://{host}:{port}"
    overrides: dict[str, object] = {"mode": "dev", "host": host, "port": port}
    if not _configured("KEYS"):
        overrides["keys_file"] = _secret_file(
            var / "dev-keys", generate_key_spec(), "encryption key"
        )
    if not _configured("SESSION_SECRET"):
        overrides["session_secret_file"] = _secret_file(
            var / "dev-session-secret", secrets.token_urlsafe(48), "session secret"
        )
    if not _configured("DATABASE_URL"):
        overrides["database_url"] = f"sqlite:///{var / 'token-vault.db'}"
    with ExitStack() as stack:
        if not os.environ.get("TOKEN_VAULT_OIDC_ISSUER"):
            from token_vault.service.devprovider import DevProvider, ensure_installed

            ensure_installed(progress=_say)
            provider = stack.enter_context(
                DevProvider(
                    redirect_uris=[f"{base_url}{AUTH_PREFIX}/callback"],
                    backchannel_logout_uri=f"{base_url}{AUTH_PREFIX}/backchannel-logout",
                    test_hooks=False,
                )
            )
            overrides.update(
                oidc_issuer=provider.issuer,
                oidc_client_id=DEFAULT_WEB_CLIENT_ID,
                oidc_client_secret=DEFAULT_WEB_CLIENT_SECRET,
                oidc_client_secret_file=None,
                oidc_provider_name="devprovider",
            )
            token_endpoint = provider.token_endpoint
        else:
            token_endpoint = "<your provider's token endpoint>"  # noqa: S105 - a hint
        settings = ServiceSettings(**overrides)  # type: ignore[arg-type]
        asyncio.run(schema.upgrade(settings.database()))
        app = create_app(settings)
        _say()
        _say(f"token-vault (dev mode) on {base_url}  (database {settings.database()})")
        _say(f"  identity provider: {settings.oidc_issuer}")
        _say("  open the page, sign in with any user name; Ctrl-C stops everything.")
        _say("  try the API as a service account:")
        _say(f"  {_try_command(token_endpoint, base_url)}")
        _say()
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
