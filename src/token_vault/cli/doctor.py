"""``token-vault doctor``: a configuration checked end to end, each check with a fix hint.

Settings, keys, the database and its schema, the provider's discovery document, its
issuer and keys, and whether its token endpoint accepts the client; then the URIs to
register at the provider. Nothing is written anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from token_vault.errors import VaultError
from token_vault.oidc.provider import OpenIDProvider
from token_vault.service.settings import ServiceSettings

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome; ``hint`` says how to fix a failure."""

    name: str
    ok: bool
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def _attempt(name: str, hint: str, probe: Callable[[], Awaitable[str]]) -> Check:
    try:
        return Check(name, True, await probe())
    except VaultError as exc:
        return Check(name, False, str(exc), hint)


async def run_checks(settings: ServiceSettings) -> list[Check]:
    """Every check, in order; later checks are skipped when what they need failed."""
    checks = [
        Check("settings", False, problem, "set it in the environment or .env")
        for problem in settings.problems()
    ]
    if not checks:
        checks.append(Check("settings", True, f"mode {settings.mode}, all required present"))

    async def keys() -> str:
        keyring = settings.keyring()
        wrapper = settings.key_wrapper()
        held = f", unwrapped by {wrapper.kek_id}" if wrapper is not None else ""
        return f"{len(keyring.key_ids)} key(s), primary {keyring.primary}{held}"

    checks.append(await _attempt("keys", "`token-vault keys generate` prints one", keys))

    async def database() -> str:
        async with await settings.open_vault() as vault:
            status = await vault.schema_status()
            if not status.is_current:
                raise VaultError(
                    f"schema at {status.current or 'base'}, this version needs {status.head}"
                )
            unknown = set(await vault.keys_in_use()) - set(settings.keyring().key_ids)
            if unknown:
                raise VaultError(f"rows sealed with keys not configured: {sorted(unknown)}")
            return f"{settings.database().redacted()} reachable, schema at {status.head}"

    checks.append(
        await _attempt(
            "database",
            "check TOKEN_VAULT_DATABASE_URL, run `token-vault db upgrade`, configure every key",
            database,
        )
    )
    try:
        provider_settings = settings.provider()
    except VaultError as exc:
        checks.append(Check("provider", False, str(exc), "set TOKEN_VAULT_OIDC_*"))
        return checks
    provider = OpenIDProvider(provider_settings)
    try:
        discovery = await _attempt(
            "discovery",
            "TOKEN_VAULT_OIDC_ISSUER must equal the provider's `issuer`, character for character",
            lambda: _discovery(provider),
        )
        checks.append(discovery)
        if discovery.ok:
            checks.append(
                await _attempt(
                    "jwks", "the provider must publish jwks_uri", lambda: _jwks(provider)
                )
            )
            checks.append(
                await _attempt(
                    "client",
                    "check TOKEN_VAULT_OIDC_CLIENT_ID and TOKEN_VAULT_OIDC_CLIENT_SECRET "
                    "(a confidential client, client_secret_basic)",
                    lambda: _client(provider),
                )
            )
    finally:
        await provider.close()
    for name, uri in settings.redirect_uris().items():
        checks.append(Check(f"register {name}", True, uri))
    return checks


async def _discovery(provider: OpenIDProvider) -> str:
    document = await provider.metadata()
    return f"{provider.settings.discovery_url} names issuer {document.get('issuer')!r}"


async def _jwks(provider: OpenIDProvider) -> str:
    keys = await provider.key_set()
    return f"{len(keys.keys)} signing key(s)"


async def _client(provider: OpenIDProvider) -> str:
    if not await provider.check_client_credentials():
        raise VaultError("the token endpoint refused the client's credentials")
    return f"client {provider.settings.client_id!r} accepted by the token endpoint"
