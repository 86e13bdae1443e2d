"""The vault's errors, one tree.

Every error the vault raises on purpose derives from :class:`VaultError`. Errors carry
data (field names, entry ids, counts), never a token, a key or a password.

::

    VaultError
    ├── ConfigurationError          settings are missing or invalid; nothing was opened
    │   ├── KeyringError            no usable encryption key (missing, short, malformed)
    │   └── MissingExtraError       a part needs an extra that is not installed (``extra``);
    │                               also an ``ImportError``
    ├── ValidationError             bad input, refused before anything was written
    ├── DecryptionError             a ciphertext did not decrypt (opaque on purpose)
    ├── NotFoundError               no such entry
    ├── UnavailableError            the database cannot be reached right now; retry later
    ├── MigrationError              the schema cannot be changed as asked
    │   └── DuplicateRefreshTokensError
    │                               users hold several refresh tokens; run `db dedupe`
    ├── LogoutTokenError            a back-channel logout token was refused (``reason``)
    ├── ReauthRequiredError         the user's grant is gone or dead; they must log in again
    └── ProviderError               the OpenID provider did not give a usable answer
        ├── ProviderUnavailableError  5xx or timeouts, after bounded retries
        └── ProviderResponseError     a malformed answer, or an ID token that fails checks

The mapping to CLI exit codes lives in :mod:`token_vault.cli.app`; the mapping to HTTP
statuses in :mod:`token_vault.service.problem`.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecryptionError",
    "DuplicateRefreshTokensError",
    "KeyringError",
    "LogoutTokenError",
    "MigrationError",
    "MissingExtraError",
    "NotFoundError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderUnavailableError",
    "ReauthRequiredError",
    "UnavailableError",
    "ValidationError",
    "VaultError",
]


class VaultError(Exception):
    """Base class of every error the vault raises on purpose."""


class ConfigurationError(VaultError):
    """Settings are missing or invalid, so the vault refuses to open."""


class KeyringError(ConfigurationError):
    """No usable encryption key: missing, malformed, not 32 bytes, or no primary."""


class MissingExtraError(ConfigurationError, ImportError):
    """A part of token-vault needs an extra that is not installed.

    ``extra`` names it (``postgres``, ``oidc``, ``service``); ``modules`` are the modules
    that could not be imported. The message says what to install.
    """

    def __init__(self, message: str, *, extra: str, modules: tuple[str, ...]) -> None:
        super().__init__(message)
        self.extra = extra
        self.modules = modules
        self.name = modules[0] if modules else None  # ImportError's "which module"


class ValidationError(VaultError, ValueError):
    """Input was refused before anything was written.

    ``field`` names the offending argument; ``reason`` says what is wrong with it. The
    value itself is never included, since it may be a secret.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DecryptionError(VaultError):
    """A stored token could not be decrypted.

    Raised alike for a wrong key, an unknown key id, tampered bytes and a ciphertext
    moved to another row, so that a caller learns nothing about which check failed.
    """

    def __init__(self, entry_id: str | None = None) -> None:
        where = f" (entry {entry_id})" if entry_id else ""
        super().__init__(f"stored token could not be decrypted{where}")
        self.entry_id = entry_id


class UnavailableError(VaultError):
    """The database could not be reached or dropped the connection; retry later."""


class MigrationError(VaultError):
    """A schema change could not be applied."""


class DuplicateRefreshTokensError(MigrationError):
    """Some users hold more than one refresh token, so the unique index cannot be built."""

    def __init__(self, users_affected: int) -> None:
        super().__init__(
            f"{users_affected} user(s) hold more than one refresh token; the unique index "
            "was not created and nothing was changed. Run `token-vault db dedupe` "
            "(keeps each user's newest refresh token), then `token-vault db upgrade` again."
        )
        self.users_affected = users_affected


class NotFoundError(VaultError):
    """No entry matches (e.g. no refresh token stored for the user)."""


class ReauthRequiredError(VaultError):
    """The user must log in again: no refresh token stored, or the provider killed the grant.

    ``reason`` is ``"no_refresh_token"`` or ``"invalid_grant"``.
    """

    def __init__(self, user_id: str, reason: str) -> None:
        super().__init__(f"user {user_id!r} must log in again ({reason})")
        self.user_id = user_id
        self.reason = reason


class ProviderError(VaultError):
    """The OpenID provider did not give a usable answer; stored tokens were left as they were."""


class ProviderUnavailableError(ProviderError):
    """The provider answered 5xx or timed out on every attempt."""


class ProviderResponseError(ProviderError):
    """The provider's answer was malformed, or carried an ID token that failed validation."""


class LogoutTokenError(VaultError):
    """A back-channel logout token was refused; nothing was changed.

    ``reason`` is a short code such as ``"bad_signature"`` or ``"replayed"`` (the list is
    in :mod:`token_vault.oidc.logout_token`). The message never quotes the token.
    """

    def __init__(self, reason: str, description: str = "the token is invalid") -> None:
        super().__init__(f"logout token refused ({reason}): {description}")
        self.reason = reason
