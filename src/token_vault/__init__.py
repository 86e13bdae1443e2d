"""token-vault: a home for users' OAuth/OpenID Connect refresh and offline tokens.

Everything a user may import is re-exported here; other modules are private.
"""

from __future__ import annotations

from token_vault.config import VaultSettings
from token_vault.crypto.keyring import Key, Keyring, generate_key_spec
from token_vault.errors import (
    ConfigurationError,
    DecryptionError,
    DuplicateRefreshTokensError,
    KeyringError,
    LogoutTokenError,
    MigrationError,
    NotFoundError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
    UnavailableError,
    ValidationError,
    VaultError,
)
from token_vault.oidc.access import AccessToken, AccessTokens
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
from token_vault.oidc.routes import LoginSettings, RelyingParty
from token_vault.storage.url import DatabaseURL
from token_vault.vault.core import TokenVault
from token_vault.vault.entry import TokenType, VaultEntry

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
