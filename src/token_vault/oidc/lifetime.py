"""How long a refresh token lives, as honestly as the provider lets us know.

In order: the token response's ``refresh_expires_in`` (Keycloak; ``0`` means the token
does not expire, as for offline tokens), else the ``exp`` of a refresh token that is a
JWT (read, not trusted: the provider's own refusal is what counts), else unknown.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

__all__ = ["LifetimeSource", "RefreshLifetime", "refresh_lifetime"]

# Far enough for "never", near enough for every database and datetime to hold.
NEVER = datetime(9000, 1, 1, tzinfo=UTC)


class LifetimeSource(StrEnum):
    PROVIDER = "provider"  # refresh_expires_in
    JWT = "jwt"  # the refresh token's own exp
    NONE = "none"  # the provider said it does not expire
    UNKNOWN = "unknown"  # nobody said: a default is assumed, for purging only


@dataclass(frozen=True, slots=True)
class RefreshLifetime:
    expires_at: datetime | None  # None when unknown
    source: LifetimeSource


def refresh_lifetime(
    refresh_expires_in: object, refresh_token: str | None, now: datetime
) -> RefreshLifetime:
    if isinstance(refresh_expires_in, int | float) and not isinstance(refresh_expires_in, bool):
        if refresh_expires_in == 0:
            return RefreshLifetime(NEVER, LifetimeSource.NONE)
        if refresh_expires_in > 0:
            return RefreshLifetime(
                now + timedelta(seconds=refresh_expires_in), LifetimeSource.PROVIDER
            )
    expiry = _jwt_expiry(refresh_token) if refresh_token else None
    if expiry is not None:
        return RefreshLifetime(expiry, LifetimeSource.JWT)
    return RefreshLifetime(None, LifetimeSource.UNKNOWN)


def _jwt_expiry(token: str) -> datetime | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None
