"""token-vault: a home for users' OAuth/OpenID Connect refresh and offline tokens.

Everything a user may import is re-exported here; other modules are private. The OpenID
Connect names (``AccessTokens``, ``OpenIDProvider``, ``RelyingParty``...) need the
``oidc`` extra and are imported on first use, so the core works without it.
"""

from __future__ import annotations

import importlib
import typing

from token_vault.config import VaultSettings
from token_vault.crypto.keyring import Key, Keyring, generate_key_spec
from token_vault.errors import (
    ConfigurationError,
    DecryptionError,
    DuplicateRefreshTokensError,
    KeyringError,
    LogoutTokenError,
    MigrationError,
    MissingExtraError,
    NotFoundError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
    UnavailableError,
    ValidationError,
    VaultError,
)
from token_vault.extra import require as _require
from token_vault.storage.url import DatabaseURL
from token_vault.vault.core import TokenVault
from token_vault.vault.entry import TokenType, VaultEntry

if typing.TYPE_CHECKING:
    from token_vault.oidc.access import AccessToken, AccessTokens
    from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
    from token_vault.oidc.routes import LoginSettings, RelyingParty

__all__ = [
    "AccessToken",
    "AccessTokens",
    "ConfigurationError",
    "DatabaseURL",
    "DecryptionError",
    "DuplicateRefreshTokensError",
    "Key",
    "Keyring",
    "KeyringError",
    "LoginSettings",
    "LogoutTokenError",
    "MigrationError",
    "MissingExtraError",
    "NotFoundError",
    "OpenIDProvider",
    "ProviderError",
    "ProviderResponseError",
    "ProviderSettings",
    "ProviderUnavailableError",
    "ReauthRequiredError",
    "RelyingParty",
    "TokenType",
    "TokenVault",
    "UnavailableError",
    "ValidationError",
    "VaultEntry",
    "VaultError",
    "VaultSettings",
    "generate_key_spec",
]

__version__ = "0.1.0"

_OIDC_NAMES = {
    "AccessToken": "token_vault.oidc.access",
    "AccessTokens": "token_vault.oidc.access",
    "LoginSettings": "token_vault.oidc.routes",
    "OpenIDProvider": "token_vault.oidc.provider",
    "ProviderSettings": "token_vault.oidc.provider",
    "RelyingParty": "token_vault.oidc.routes",
}
"""The exports that need the ``oidc`` extra, and the modules that define them."""


def __getattr__(name: str) -> object:
    module = _OIDC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'token_vault' has no attribute {name!r}")
    _require("oidc", f"token_vault.{name}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
