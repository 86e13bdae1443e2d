"""Refresh now? A decision that says why, for logs, metrics and tests alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from token_vault.vault.refresh import RefreshState

__all__ = ["RefreshDecision", "RefreshReason", "should_refresh"]


class RefreshReason(StrEnum):
    FRESH = "fresh"  # the cached access token has more than the margin left: serve it
    NO_CACHED_TOKEN = "no_cached_token"  # noqa: S105 - nothing cached (first use, after a login)
    EXPIRING = "expiring"  # the cached token lapses within the margin
    FORCED = "forced"  # the caller asked for a refresh
    NEEDS_REAUTH = "needs_reauth"  # the grant is dead: only a new login helps


@dataclass(frozen=True, slots=True)
class RefreshDecision:
    refresh: bool
    reason: RefreshReason


def should_refresh(
    state: RefreshState, now: datetime, *, margin: timedelta, force: bool = False
) -> RefreshDecision:
    """Whether the entry must be refreshed at the provider before a token is handed out."""
    if state.needs_reauth:
        return RefreshDecision(False, RefreshReason.NEEDS_REAUTH)
    if force:
        return RefreshDecision(True, RefreshReason.FORCED)
    if state.access is None:
        return RefreshDecision(True, RefreshReason.NO_CACHED_TOKEN)
    if state.access.expires_at - margin <= now:
        return RefreshDecision(True, RefreshReason.EXPIRING)
    return RefreshDecision(False, RefreshReason.FRESH)
