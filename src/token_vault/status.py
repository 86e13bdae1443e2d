"""The one map from the vault's errors to HTTP statuses.

Used by the service's ``application/problem+json`` responses, its web page, and the
login routes any app can mount, so one error gets one status everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from token_vault.errors import (
    ConfigurationError,
    DecryptionError,
    LogoutTokenError,
    NotFoundError,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
    UnavailableError,
    ValidationError,
    VaultError,
)

__all__ = ["INTERNAL", "HttpStatus", "http_status"]


@dataclass(frozen=True, slots=True)
class HttpStatus:
    """A status with the problem type's slug and title (RFC 9457)."""

    code: int
    slug: str
    title: str


INTERNAL = HttpStatus(500, "internal", "Internal error")

# The first matching class wins, so subclasses come first.
_STATUS_FOR: tuple[tuple[type[VaultError], HttpStatus], ...] = (
    (ValidationError, HttpStatus(400, "invalid-input", "Invalid input")),
    (LogoutTokenError, HttpStatus(400, "invalid-logout-token", "Invalid logout token")),
    (NotFoundError, HttpStatus(404, "not-found", "Not found")),
    (ReauthRequiredError, HttpStatus(409, "reauth-required", "The user must log in again")),
    (
        ProviderUnavailableError,
        HttpStatus(503, "provider-unavailable", "Identity provider unavailable"),
    ),
    (
        ProviderResponseError,
        HttpStatus(502, "provider-error", "Identity provider gave a bad answer"),
    ),
    (UnavailableError, HttpStatus(503, "database-unavailable", "Database unavailable")),
    (ConfigurationError, HttpStatus(503, "not-ready", "Service not ready")),
    (DecryptionError, HttpStatus(500, "decryption-failed", "Stored token could not be decrypted")),
)


def http_status(error: VaultError) -> HttpStatus:
    """The status for ``error`` (500 ``internal`` for an error with no entry)."""
    for kind, status in _STATUS_FOR:
        if isinstance(error, kind):
            return status
    return INTERNAL
