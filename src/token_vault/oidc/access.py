"""Fresh access tokens for a user: cached, refreshed once at a time, across processes.

``get_access_token(user_id)`` serves the cached access token while it has more than
``margin`` left. Otherwise exactly one caller refreshes at the provider:

* in one process, concurrent callers for a user share one in-flight refresh;
* across processes, a lease column on the user's row (taken with one conditional
  ``UPDATE ... RETURNING``) lets one process refresh while the others wait and re-read.
  No database connection or transaction is held during the provider's round trip; a
  lease whose holder died lapses after ``lease``.

After taking the lease the row is re-read (the ``RETURNING`` of the claim), so a refresh
someone else just finished is served instead of repeated. The outcome (rotated refresh
token, or the old one kept when the provider sends none; the new access token; the
counters ``refreshCount``/``lastRefresh``) is written in one statement that also
releases the lease. ``invalid_grant`` marks the row as needing a new login.

This module decides and talks to the provider; every read and write of stored state
goes through :class:`~token_vault.vault.core.TokenVault` (``refresh_state``,
``claim_refresh``, ``record_refresh``, ``mark_needs_reauth``, ``release_refresh``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from token_vault.errors import (
    ProviderResponseError,
    ReauthRequiredError,
    UnavailableError,
    ValidationError,
)
from token_vault.oidc.decision import RefreshDecision, RefreshReason, should_refresh
from token_vault.oidc.provider import OpenIDProvider, TokenSet
from token_vault.vault.core import Clock, TokenVault, utc_now
from token_vault.vault.entry import mask
from token_vault.vault.refresh import RefreshLease, RefreshOutcome, RefreshState
from token_vault.vault.validation import check_identifier

__all__ = ["AccessToken", "AccessTokens", "RefreshObserver"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Called with the outcome of every provider refresh: "ok", "invalid_grant", "error".
RefreshObserver = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A valid access token for a user; the token is masked in ``repr``."""

    user_id: str
    token: str = field(repr=False)
    expires_at: datetime
    refreshed: bool

    def __repr__(self) -> str:
        return (
            f"AccessToken(user_id={self.user_id!r}, token={mask(self.token)!r}, "
            f"expires_at={self.expires_at.isoformat()!r}, refreshed={self.refreshed!r})"
        )


class AccessTokens:
    """Hands out fresh access tokens for users whose refresh tokens are in the vault."""

    def __init__(
        self,
        vault: TokenVault,
        provider: OpenIDProvider,
        *,
        margin: timedelta = timedelta(seconds=30),
        lease: timedelta = timedelta(seconds=60),
        wait: timedelta = timedelta(seconds=30),
        default_access_ttl: timedelta = timedelta(seconds=60),
        poll_interval: float = 0.05,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        observer: RefreshObserver | None = None,
    ) -> None:
        self._vault = vault
        self._provider = provider
        self._margin = margin
        self._lease = lease
        self._wait = wait
        self._default_access_ttl = default_access_ttl
        self._poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        self._owner = f"lease-{secrets.token_hex(8)}"
        self._inflight: dict[str, asyncio.Task[AccessToken]] = {}

    async def get_access_token(self, user_id: str) -> AccessToken:
        """A valid access token for ``user_id``, refreshing at most once at a time."""
        user_id = check_identifier("user_id", user_id)
        cached = await self._cached(user_id)
        if cached is not None:
            return cached
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.create_task(self._refresh(user_id))
            self._inflight[user_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(user_id, None))
        return await asyncio.shield(task)

    async def refresh_now(self, user_id: str) -> AccessToken:
        """Refresh at the provider even if the cached token is still fresh."""
        user_id = check_identifier("user_id", user_id)
        return await self._refresh(user_id, force=True)

    def _decide(self, state: RefreshState, *, force: bool = False) -> RefreshDecision:
        return should_refresh(state, self._clock(), margin=self._margin, force=force)

    @staticmethod
    def _served(state: RefreshState) -> AccessToken:
        assert state.access is not None
        return AccessToken(state.user_id, state.access.token, state.access.expires_at, False)

    async def _cached(self, user_id: str) -> AccessToken | None:
        state = await self._vault.refresh_state(user_id)
        if state is None:
            raise ReauthRequiredError(user_id, "no_refresh_token")
        decision = self._decide(state)
        if decision.reason is RefreshReason.NEEDS_REAUTH:
            raise ReauthRequiredError(user_id, "invalid_grant")
        return None if decision.refresh else self._served(state)

    async def _refresh(self, user_id: str, *, force: bool = False) -> AccessToken:
        deadline = self._clock() + self._wait
        while True:
            lease = await self._vault.claim_refresh(user_id, self._owner, lease=self._lease)
            if lease is not None:
                break
            # Someone else holds the lease (or there is no row): look again shortly.
            cached = await self._cached(user_id)
            if cached is not None and not force:
                return cached
            if self._clock() >= deadline:
                raise UnavailableError(
                    f"a refresh for user {user_id!r} is in progress elsewhere and did not finish"
                )
            await self._sleep(self._poll_interval)
        try:
            decision = self._decide(lease.state, force=force)
            if decision.reason is RefreshReason.NEEDS_REAUTH:
                raise ReauthRequiredError(user_id, "invalid_grant")
            if not decision.refresh:  # another process refreshed while we waited
                return self._served(lease.state)
            return await self._refresh_at_provider(lease)
        finally:
            # A no-op when the outcome was written (the write released the lease).
            await asyncio.shield(self._vault.release_refresh(lease))

    async def _refresh_at_provider(self, lease: RefreshLease) -> AccessToken:
        entry = lease.entry
        started = asyncio.get_running_loop().time()
        try:
            tokens = await self._provider.refresh(entry.token, user_id=entry.user_id)
            if tokens.id_token is not None:
                await self._provider.validate_id_token(tokens.id_token, subject=entry.user_id)
        except ReauthRequiredError:
            self._observe("invalid_grant", started)
            await self._vault.mark_needs_reauth(lease)
            raise
        except BaseException:
            self._observe("error", started)
            raise
        self._observe("ok", started)
        return await self._record(lease, tokens)

    async def _record(self, lease: RefreshLease, tokens: TokenSet) -> AccessToken:
        now = self._clock()
        ttl = timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        access_expires_at = now + (ttl or self._default_access_ttl)
        refresh_ttl = tokens.refresh_expires_in
        outcome = RefreshOutcome(
            access_token=tokens.access_token,
            access_expires_at=access_expires_at,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=now + timedelta(seconds=refresh_ttl) if refresh_ttl else None,
            session_state=tokens.session_state,
        )
        try:
            stored = await asyncio.shield(self._vault.record_refresh(lease, outcome))
        except ValidationError:
            raise ProviderResponseError("provider returned a token that cannot be stored") from None
        if not stored:
            # A login replaced the entry's token while we refreshed (its token wins), or
            # the entry was deleted: the access token is still valid, but was not kept.
            log.warning(
                "refresh outcome for entry %s not stored: the entry changed", lease.entry.id
            )
        return AccessToken(
            lease.entry.user_id, tokens.access_token, access_expires_at, refreshed=True
        )

    def _observe(self, outcome: str, started: float) -> None:
        if self._observer is not None:
            self._observer(outcome, asyncio.get_running_loop().time() - started)
