"""The service's settings: environment variables with the ``TOKEN_VAULT_`` prefix or ``.env``.

Production mode fails closed: :meth:`ServiceSettings.problems` lists everything missing,
and :func:`token_vault.service.app.create_app` refuses to build an app while any is.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from token_vault.config import VaultSettings
from token_vault.errors import ConfigurationError, VaultError
from token_vault.oidc.provider import ProviderSettings
from token_vault.service.policy import ACTIONS, CallerPolicy, CallerRule, UserScope
from token_vault.service.webhooks import DeliveryPolicy, check_secret

__all__ = ["SCOPES", "ServiceSettings", "settings_table"]

# What each API operation requires of the calling service's token.
SCOPES = {
    "read": "vault:read",
    "token": "vault:token",
    "write": "vault:write",
    "delete": "vault:delete",
    "audit": "vault:audit",
}

# The dev provider's service account (client credentials), allowed everything in dev mode.
DEV_CALLER = "token-vault-caller"
_MIN_DISTINCT = 12  # distinct characters a 32+ character random secret has, at least
_DEV_FILES = {"dev-keys", "dev-session-secret"}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "dev-secret", "password", "xxx"}


class ServiceSettings(VaultSettings):
    """Everything ``token-vault serve`` needs."""

    mode: Literal["production", "dev"] = Field(
        default="production",
        description="`production` fails closed on missing or unsafe settings; `serve --dev` "
        "sets `dev`",
    )
    host: str = Field(default="127.0.0.1", description="interface `serve` binds")
    port: int = Field(default=8000, ge=1, le=65535, description="port `serve` binds")
    public_url: str | None = Field(
        default=None,
        description="the URL browsers use to reach this service (https; required in "
        "production); the redirect URIs are derived from it",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="the provider's issuer, exactly as its discovery document writes it",
    )
    oidc_client_id: str | None = Field(
        default=None, description="this service's confidential client at the provider"
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="that client's secret (client_secret_basic)"
    )
    oidc_client_secret_file: Path | None = Field(
        default=None, description="a file holding that secret (instead of OIDC_CLIENT_SECRET)"
    )
    oidc_scopes: str = Field(
        default="openid profile email",
        description="scopes asked at sign-in; add `offline_access` for offline entries",
    )
    oidc_provider_name: str = Field(
        default="oidc", description="the `provider` written into each entry's metadata"
    )
    oidc_revocation_endpoint: str | None = Field(
        default=None, description="RFC 7009 revocation endpoint, when discovery lacks it"
    )
    oidc_end_session_endpoint: str | None = Field(
        default=None, description="RP-initiated logout endpoint, when discovery lacks it"
    )
    oidc_trusted_origins: str = Field(
        default="",
        description="space-separated origins besides the issuer's that discovery may name "
        "(Google: `https://oauth2.googleapis.com https://www.googleapis.com`)",
    )
    insecure_http: bool = Field(
        default=False,
        description="allow plain-http issuer and public URL in production (loopback tests only)",
    )
    api_audience: str = Field(
        default="token-vault", description="the `aud` callers' access tokens must carry"
    )
    caller_policy: str | None = Field(
        default=None,
        description="which caller may do what for whom (JSON; see docs/security.md); "
        "without one every caller is refused",
    )
    caller_policy_file: Path | None = Field(
        default=None, description="a file holding the caller policy"
    )
    caller_token_max_lifetime_seconds: int = Field(
        default=86400, ge=60, description="callers' access tokens living longer are refused"
    )
    oidc_introspection_endpoint: str | None = Field(
        default=None,
        description="RFC 7662 endpoint for opaque caller tokens, when discovery lacks it",
    )
    oidc_introspection_client_id: str | None = Field(
        default=None, description="client that authenticates to introspection (default ours)"
    )
    oidc_introspection_client_secret: SecretStr | None = Field(
        default=None, description="that client's secret"
    )
    oidc_introspection_client_secret_file: Path | None = Field(
        default=None, description="a file holding that secret"
    )
    session_secret: SecretStr | None = Field(
        default=None, description="signs the browser session cookie; 32+ characters"
    )
    session_secret_file: Path | None = Field(
        default=None, description="a file holding that secret (instead of SESSION_SECRET)"
    )
    access_token_margin_seconds: int = Field(
        default=30, ge=0, description="refresh a cached access token this long before it lapses"
    )
    refresh_lease_seconds: int = Field(
        default=60,
        ge=5,
        description="one process refreshes a user at a time; its lease, renewed every third "
        "of this while the provider answers",
    )
    default_refresh_ttl_days: int = Field(
        default=30,
        ge=1,
        description="refresh-token lifetime assumed when the provider does not say",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="larger request bodies are refused (413)"
    )
    refresher: bool = Field(
        default=False,
        description="run the keep-alive refresher inside `serve` (also `serve --refresher`)",
    )
    refresher_window_seconds: int = Field(
        default=600, ge=1, description="keep-alive refreshes entries lapsing within this"
    )
    refresher_interval_seconds: int = Field(
        default=30, ge=1, description="seconds between keep-alive passes"
    )
    refresher_concurrency: int = Field(
        default=4, ge=1, le=100, description="keep-alive refreshes at once"
    )
    refresher_rate: float = Field(
        default=5.0, gt=0, description="keep-alive refreshes started per second, at most"
    )
    traces: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry traces: `otlp` (to the collector the standard "
        "`OTEL_EXPORTER_OTLP_*` variables name) or `console`; needs the `otel` extra",
    )
    webhook_url: str | None = Field(
        default=None,
        description="the app's endpoint for events (an entry needing a new login, logged out "
        "by the provider, expired), signed per Standard Webhooks; with it set the vault keeps "
        "them in its outbox until delivered; set it on every instance, `purge-expired` too",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="`whsec_` + base64 of 24-64 random bytes, signing each delivery "
        "(`token-vault events secret` prints one); required with the URL",
    )
    webhook_secret_file: Path | None = Field(
        default=None, description="a file holding the webhook secret"
    )
    webhook_deliver: bool = Field(
        default=True,
        description="run the delivery worker inside `serve` (any number of replicas may); "
        "`false` leaves delivery to `token-vault events deliver`",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="one delivery attempt waits this long at most"
    )
    webhook_retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        description="a failed delivery is retried after this, then twice as long each time",
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="the longest wait between two delivery attempts"
    )
    webhook_max_attempts: int = Field(
        default=25,
        ge=1,
        description="attempts before an event is marked `failed` (`token-vault events "
        "replay ID` queues it again)",
    )
    webhook_poll_seconds: float = Field(
        default=2.0, gt=0, description="how often the delivery worker looks for due events"
    )
    webhook_concurrency: int = Field(
        default=4, ge=1, le=100, description="deliveries in flight at once, per worker"
    )

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def margin(self) -> timedelta:
        return timedelta(seconds=self.access_token_margin_seconds)

    def problems(self) -> list[str]:
        """What is missing or unsafe; empty when the service may start."""
        found: list[str] = []
        try:
            self.keyring()
        except VaultError as exc:
            found.append(f"TOKEN_VAULT_KEYS: {exc}")
        try:
            self.database()
        except VaultError as exc:
            found.append(f"TOKEN_VAULT_DATABASE_URL: {exc}")
        if self.mode == "production" and "TOKEN_VAULT_DATABASE_URL" not in self._explicit():
            found.append(
                "TOKEN_VAULT_DATABASE_URL: set it (or TOKEN_VAULT_DATABASE_URL_FILE) explicitly "
                "in production"
            )
        if self.mode == "production":
            found.extend(self._url_problems())
        for name in ("oidc_issuer", "oidc_client_id"):
            if not getattr(self, name):
                found.append(f"TOKEN_VAULT_{name.upper()}: required")
        secret = self.oidc_client_secret.get_secret_value() if self.oidc_client_secret else ""
        if not secret:
            found.append("TOKEN_VAULT_OIDC_CLIENT_SECRET: required")
        elif self.mode == "production" and secret.lower() in _PLACEHOLDERS:
            found.append("TOKEN_VAULT_OIDC_CLIENT_SECRET: a placeholder value is not allowed")
        session = self.session_secret.get_secret_value() if self.session_secret else ""
        if len(session) < 32:
            found.append("TOKEN_VAULT_SESSION_SECRET: required, at least 32 characters")
        elif self.mode == "production" and len(set(session)) < _MIN_DISTINCT:
            found.append(
                "TOKEN_VAULT_SESSION_SECRET: too little variety to be a random secret "
                "(`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        try:
            self.policy()
        except VaultError as exc:
            found.append(f"TOKEN_VAULT_CALLER_POLICY: {exc}")
        if self.traces != "off" and not _otel_installed():
            found.append(
                f"TOKEN_VAULT_TRACES={self.traces}: needs the otel extra "
                "(pip install 'oidc-token-vault[otel]')"
            )
        if self.mode == "production":
            found.extend(self._production_problems())
        found.extend(self._webhook_problems())
        return found

    def _webhook_problems(self) -> list[str]:
        if self.webhook_url is None:
            return []
        found: list[str] = []
        url = urlsplit(self.webhook_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            found.append("TOKEN_VAULT_WEBHOOK_URL: must be an http(s) URL")
        elif self.mode == "production" and url.scheme != "https":
            if not self.insecure_http:
                found.append(
                    "TOKEN_VAULT_WEBHOOK_URL: must be https:// in production "
                    "(TOKEN_VAULT_INSECURE_HTTP=1 allows http for tests on loopback)"
                )
            elif url.hostname not in _LOOPBACK:
                found.append("TOKEN_VAULT_WEBHOOK_URL: plain http is allowed on loopback only")
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if not secret:
            found.append("TOKEN_VAULT_WEBHOOK_SECRET: required with TOKEN_VAULT_WEBHOOK_URL")
        else:
            try:
                check_secret(secret)
            except VaultError as exc:
                found.append(f"TOKEN_VAULT_WEBHOOK_SECRET: {exc}")
        return found

    @property
    def events_enabled(self) -> bool:
        """Whether the vault writes events for the app (a webhook URL is set)."""
        return self.webhook_url is not None

    def delivery_policy(self) -> DeliveryPolicy:
        """Where and how the delivery worker sends events."""
        if self.webhook_url is None or self.webhook_secret is None:
            raise ConfigurationError(
                "events need TOKEN_VAULT_WEBHOOK_URL and TOKEN_VAULT_WEBHOOK_SECRET"
            )
        found = self._webhook_problems()
        if found:
            raise ConfigurationError("; ".join(found))
        return DeliveryPolicy(
            url=self.webhook_url,
            secret=self.webhook_secret.get_secret_value(),
            timeout=self.webhook_timeout_seconds,
            retry_base=self.webhook_retry_base_seconds,
            retry_max=self.webhook_retry_max_seconds,
            max_attempts=self.webhook_max_attempts,
            poll_interval=self.webhook_poll_seconds,
            concurrency=self.webhook_concurrency,
        )

    def _production_problems(self) -> list[str]:
        found: list[str] = []
        if self.api_audience == self.oidc_client_id:
            found.append(
                "TOKEN_VAULT_API_AUDIENCE: must differ from the OIDC client id (otherwise "
                "tokens issued to this app's own client would pass as callers)"
            )
        for path in (self.keys_file, self.caller_policy_file):
            if path is not None and path.name in _DEV_FILES:
                found.append(f"{path}: a dev-mode file is not allowed in production")
        return found

    def _url_problems(self) -> list[str]:
        found: list[str] = []
        if not self.public_url:
            found.append(
                "TOKEN_VAULT_PUBLIC_URL: required in production (the URL browsers use; "
                "the redirect URI registered at the provider is derived from it)"
            )
        for name, url in (("PUBLIC_URL", self.public_url), ("OIDC_ISSUER", self.oidc_issuer)):
            if not url or url.startswith("https://"):
                continue
            if not self.insecure_http:
                found.append(
                    f"TOKEN_VAULT_{name}: must be https:// in production "
                    "(TOKEN_VAULT_INSECURE_HTTP=1 allows http for tests on loopback)"
                )
            elif (urlsplit(url).hostname or "") not in _LOOPBACK:
                found.append(
                    f"TOKEN_VAULT_{name}: plain http is allowed on loopback only "
                    "(127.0.0.1, ::1, localhost), even with TOKEN_VAULT_INSECURE_HTTP=1"
                )
        return found

    def uses_insecure_http(self) -> bool:
        """Production running on plain http by ``TOKEN_VAULT_INSECURE_HTTP=1``."""
        urls = (self.public_url or "", self.oidc_issuer or "")
        return self.mode == "production" and any(u.startswith("http://") for u in urls)

    def policy(self) -> CallerPolicy:
        """The caller policy; in dev mode without one, the dev service account may do
        everything (its client is the dev provider's)."""
        text = self.caller_policy
        if text is None and self.caller_policy_file is not None:
            try:
                text = self.caller_policy_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read TOKEN_VAULT_CALLER_POLICY_FILE: {exc.strerror}"
                ) from None
        if text is not None:
            return CallerPolicy.parse(text)
        if self.mode == "dev":
            return CallerPolicy({DEV_CALLER: CallerRule(frozenset(ACTIONS), UserScope.ALL)})
        return CallerPolicy({})

    def introspection_auth(self) -> tuple[str, str] | None:
        if self.oidc_introspection_client_id and self.oidc_introspection_client_secret:
            return (
                self.oidc_introspection_client_id,
                self.oidc_introspection_client_secret.get_secret_value(),
            )
        return None

    def redirect_uris(self) -> dict[str, str]:
        """The URIs to register at the provider for this service."""
        base = self.base_url
        return {
            "redirect_uri": f"{base}/auth/callback",
            "post_logout_redirect_uri": f"{base}/",
            "backchannel_logout_uri": f"{base}/auth/backchannel-logout",
        }

    def _explicit(self) -> set[str]:
        return {f"TOKEN_VAULT_{name.upper()}" for name in self.model_fields_set}

    def require_valid(self) -> None:
        found = self.problems()
        if found:
            raise ConfigurationError(
                "refusing to start; fix these settings:\n  - " + "\n  - ".join(found)
            )

    def provider(self) -> ProviderSettings:
        if not (self.oidc_issuer and self.oidc_client_id and self.oidc_client_secret):
            raise ConfigurationError("the OpenID provider settings are incomplete")
        return ProviderSettings(
            issuer=self.oidc_issuer,
            client_id=self.oidc_client_id,
            client_secret=self.oidc_client_secret.get_secret_value(),
            scopes=tuple(self.oidc_scopes.split()),
            revocation_endpoint=self.oidc_revocation_endpoint,
            end_session_endpoint=self.oidc_end_session_endpoint,
            trusted_origins=tuple(self.oidc_trusted_origins.split()),
            allow_http=self.mode == "dev" or self.insecure_http,
        )


def _otel_installed() -> bool:
    """The ``otel`` extra: the SDK and the three instrumentations traces use."""
    needed = (
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry.instrumentation.fastapi",
        "opentelemetry.instrumentation.httpx",
        "opentelemetry.instrumentation.asyncpg",
    )
    try:
        return all(importlib.util.find_spec(name) is not None for name in needed)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def settings_table() -> str:
    """Every setting as a Markdown table: variable, default, meaning (from the model)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in ServiceSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shown = "" if default is None else f"`{default}`"
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `TOKEN_VAULT_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"
