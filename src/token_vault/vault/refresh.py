"""The refresh state of an entry, as the vault hands it to the OpenID layer.

Refreshing at the provider is :mod:`token_vault.oidc`'s business; everything it reads or
writes about an entry goes through the vault in these shapes: the cached access token,
the lease that lets one process refresh at a time, and the outcome to record. The
values are decrypted or still to be sealed: the vault seals, validates and builds the
storage rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from token_vault.vault.entry import TokenType, VaultEntry, mask

__all__ = [
    "CachedAccessToken",
    "ExpiringEntry",
    "RefreshLease",
    "RefreshOutcome",
    "RefreshState",
]

# Associated-data label of cached access tokens: not a row type, only a binding.
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a label, not a secret


@dataclass(frozen=True, slots=True)
class CachedAccessToken:
    """An access token kept, sealed, beside its refresh token. Masked in ``repr``."""

    token: str = field(repr=False)
    expires_at: datetime

    def __repr__(self) -> str:
        return (
            f"CachedAccessToken(token={mask(self.token)!r}, "
            f"expires_at={self.expires_at.isoformat()!r})"
        )


@dataclass(frozen=True, slots=True)
class RefreshState:
    """What decides whether an entry must be refreshed: its cached access token, whether
    the provider has killed its grant, and ``now`` by the clock the database keeps lease
    and access-token times on (PostgreSQL's own, so replicas' clocks do not matter)."""

    entry_id: str
    user_id: str
    token_type: TokenType
    needs_reauth: bool
    access: CachedAccessToken | None
    now: datetime


@dataclass(frozen=True, slots=True)
class RefreshLease:
    """The right to refresh one entry at the provider for ``lease`` (renewable).

    ``entry`` is the entry as it was when the lease was taken (its refresh token
    decrypted), so a refresh another process finished just before is seen. Give the lease
    back to the vault with ``record_refresh``, ``mark_needs_reauth`` or
    ``release_refresh``.
    """

    owner: str
    lease: timedelta
    entry: VaultEntry
    state: RefreshState
    nonce: bytes = field(repr=False)  # what the entry held: writes apply only if unchanged
    version: int = 1  # the entry's ciphertext format


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What the provider answered to a refresh, as the vault records it.

    ``refresh_token`` is ``None`` when the provider sent none (the stored one stays);
    ``refresh_expires_in`` is ``None`` when the provider did not say (the stored expiry
    stays). Lifetimes are relative: the database dates them on its own clock.
    """

    access_token: str = field(repr=False)
    access_expires_in: timedelta
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_in: timedelta | None = None
    session_state: str | None = None


@dataclass(frozen=True, slots=True)
class ExpiringEntry:
    """An entry whose refresh token lapses soon (for keep-alive)."""

    entry_id: str
    user_id: str
    expires_at: datetime
