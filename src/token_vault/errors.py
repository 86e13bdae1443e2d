"""The vault's errors, one tree.

Every error the vault raises on purpose derives from :class:`VaultError`. Errors carry
data (field names, entry ids, counts), never a token, a key or a password.

::

    VaultError
    ├── ConfigurationError          settings are missing or invalid; nothing was opened
    │   └── KeyringError            no usable encryption key (missing, short, malformed)
    ├── ValidationError             bad input, refused before anything was written
    ├── DecryptionError             a ciphertext did not decrypt (opaque on purpose)
    ├── UnavailableError            the database cannot be reached right now; retry later
    └── MigrationError              the schema cannot be changed as asked
        └── DuplicateRefreshTokensError
                                    users hold several refresh tokens; run `db dedupe`

The mapping to CLI exit codes lives in :mod:`token_vault.cli.app`.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DecryptionError",
    "DuplicateRefreshTokensError",
    "KeyringError",
    "MigrationError",
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
