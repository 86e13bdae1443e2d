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
    NotFoundError,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
    UnavailableError,
    ValidationError,
    VaultError,
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
    entry_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"AccessToken(user_id={self.user_id!r}, token={mask(self.token)!r}, "
            f"expires_at={self.expires_at.isoformat()!r}, refreshed={self.refreshed!r})"
        )


class AccessTokens:
    """Hands out fresh access tokens for users whose refresh or offline tokens are in the
    vault."""

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
        audit: bool = False,
    ) -> None:
        if lease < timedelta(seconds=1):
            raise ValueError("lease must be at least one second")
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
        self._audit = audit
        self._owner = f"lease-{secrets.token_hex(8)}"
        self._inflight: dict[str, asyncio.Task[AccessToken]] = {}
        self._audits: set[asyncio.Task[None]] = set()

    async def get_access_token(self, user_id: str, *, entry_id: str | None = None) -> AccessToken:
        """A valid access token for ``user_id``, refreshing at most once at a time.

        From ``entry_id`` if given, else the user's refresh entry, else their newest
        live offline entry.
        """
        user_id = check_identifier("user_id", user_id)
        state = await self._state(user_id, entry_id)
        decision = self._decide(state)
        if not decision.refresh:
            return self._served(state)
        key = state.entry_id
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._refresh(state))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def refresh_now(self, user_id: str, *, entry_id: str | None = None) -> AccessToken:
        """Refresh at the provider even if the cached token is still fresh."""
        user_id = check_identifier("user_id", user_id)
        state = await self._state(user_id, entry_id)
        if state.needs_reauth:
            raise ReauthRequiredError(user_id, "invalid_grant")
        return await self._refresh(state, force=True)

    async def keep_alive(self, user_id: str, entry_id: str, *, window: timedelta) -> str:
        """Refresh the entry if its refresh token still lapses within ``window``.

        Never waits for another process: ``"busy"`` when someone holds the lease,
        ``"fresh"`` when someone refreshed it meanwhile. Otherwise ``"refreshed"``,
        ``"needs_reauth"`` (the grant is dead) or ``"gone"``; provider and database
        faults raise as usual.
        """
        state = await self._vault.refresh_state(user_id, entry_id=entry_id)
        if state is None:
            return "gone"
        if state.needs_reauth:
            return "needs_reauth"
        lease = await self._vault.claim_refresh(state, self._owner, lease=self._lease)
        if lease is None:
            return "busy"
        try:
            if lease.state.needs_reauth:
                return "needs_reauth"
            if lease.entry.expires_at - lease.state.now > window:
                return "fresh"
            try:
                await self._refresh_at_provider(lease)
            except ReauthRequiredError:
                return "needs_reauth"
            return "refreshed"
        finally:
            await asyncio.shield(self._vault.release_refresh(lease))

    # -- deciding --------------------------------------------------------------------

    async def _state(self, user_id: str, entry_id: str | None) -> RefreshState:
        state = await self._vault.refresh_state(user_id, entry_id=entry_id)
        if state is None:
            if entry_id is not None:
                raise NotFoundError(f"user {user_id!r} has no entry {entry_id!r}")
            raise ReauthRequiredError(user_id, "no_refresh_token")
        if state.needs_reauth:
            raise ReauthRequiredError(user_id, "invalid_grant")
        return state

    def _decide(self, state: RefreshState, *, force: bool = False) -> RefreshDecision:
        return should_refresh(state, state.now, margin=self._margin, force=force)

    @staticmethod
    def _served(state: RefreshState) -> AccessToken:
        assert state.access is not None
        return AccessToken(
            state.user_id, state.access.token, state.access.expires_at, False, state.entry_id
        )

    async def _fresh_elsewhere(self, state: RefreshState) -> AccessToken | None:
        """Re-read the entry: a token another process stored meanwhile, if fresh."""
        again = await self._vault.refresh_state(state.user_id, entry_id=state.entry_id)
        if again is None:
            raise ReauthRequiredError(state.user_id, "no_refresh_token")
        if again.needs_reauth:
            raise ReauthRequiredError(state.user_id, "invalid_grant")
        return None if self._decide(again).refresh else self._served(again)

    # -- refreshing ------------------------------------------------------------------

    async def _refresh(self, state: RefreshState, *, force: bool = False) -> AccessToken:
        deadline = self._clock() + self._wait
        while True:
            lease = await self._vault.claim_refresh(state, self._owner, lease=self._lease)
            if lease is not None:
                break
            # Someone else holds the lease (or the entry is gone): look again shortly.
            served = await self._fresh_elsewhere(state)
            if served is not None and not force:
                return served
            if self._clock() >= deadline:
                raise UnavailableError(
                    f"a refresh for user {state.user_id!r} is in progress elsewhere "
                    "and did not finish"
                )
            await self._sleep(self._poll_interval)
        try:
            decision = self._decide(lease.state, force=force)
            if decision.reason is RefreshReason.NEEDS_REAUTH:
                raise ReauthRequiredError(state.user_id, "invalid_grant")
            if not decision.refresh:  # another process refreshed while we waited
                return self._served(lease.state)
            return await self._refresh_at_provider(lease)
        finally:
            # A no-op when the outcome was written (the write released the lease).
            await asyncio.shield(self._vault.release_refresh(lease))

    async def _refresh_at_provider(self, lease: RefreshLease) -> AccessToken:
        entry = lease.entry
        started = asyncio.get_running_loop().time()
        keeper = asyncio.create_task(self._keep_lease(lease))
        try:
            tokens = await self._provider.refresh(entry.token, user_id=entry.user_id)
            if tokens.id_token is not None:
                await self._provider.validate_id_token(tokens.id_token, subject=entry.user_id)
        except ReauthRequiredError:
            self._observe("invalid_grant", started, lease)
            if await self._vault.mark_needs_reauth(lease):
                raise
            # The entry changed while we asked (a new login, or another process that
            # took a lapsed lease): the refused token is not the one stored any more.
            served = await self._fresh_elsewhere(lease.state)
            if served is not None:
                return served
            raise UnavailableError(
                f"the entry of user {entry.user_id!r} changed during a refresh; retry"
            ) from None
        except ProviderUnavailableError:
            # No retry: the provider may have rotated the token before the answer was
            # lost. Serve what another process stored meanwhile, or say "unavailable".
            self._observe("error", started, lease)
            served = await self._fresh_elsewhere(lease.state)
            if served is not None:
                return served
            raise
        except BaseException:
            self._observe("error", started, lease)
            raise
        finally:
            keeper.cancel()
        self._observe("ok", started, lease)
        return await self._record(lease, tokens)

    async def _keep_lease(self, lease: RefreshLease) -> None:
        """Renew the lease every third of its length while the provider call runs."""
        interval = lease.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._vault.renew_refresh(lease):
                    log.warning("refresh lease of entry %s was lost", lease.entry.id)
                    return
            except UnavailableError:
                continue  # the next renewal may reach the database

    async def _record(self, lease: RefreshLease, tokens: TokenSet) -> AccessToken:
        ttl = timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        outcome = RefreshOutcome(
            access_token=tokens.access_token,
            access_expires_in=ttl or self._default_access_ttl,
            refresh_token=tokens.refresh_token,
            refresh_expires_in=(
                timedelta(seconds=tokens.refresh_expires_in) if tokens.refresh_expires_in else None
            ),
            session_state=tokens.session_state,
        )
        try:
            stored = await asyncio.shield(self._vault.record_refresh(lease, outcome))
        except ValidationError:
            raise ProviderResponseError("provider returned a token that cannot be stored") from None
        if stored is None:
            # The lease lapsed and another process took it, or a login replaced the
            # token meanwhile: this outcome must not overwrite theirs.
            log.warning("refresh of entry %s not stored: the entry changed", lease.entry.id)
            served = await self._fresh_elsewhere(lease.state)
            if served is not None:
                return served
            raise UnavailableError(
                f"the entry of user {lease.entry.user_id!r} changed during a refresh; retry"
            )
        return AccessToken(
            lease.entry.user_id, tokens.access_token, stored, refreshed=True,
            entry_id=lease.entry.id,
        )  # fmt: skip

    def _observe(self, outcome: str, started: float, lease: RefreshLease) -> None:
        if self._observer is not None:
            self._observer(outcome, asyncio.get_running_loop().time() - started)
        if self._audit:
            # Recorded in the background: the refresh's outcome is already decided, and a
            # trail that cannot be written is logged, not turned into a failed refresh.
            task = asyncio.create_task(self._record_audit(outcome, lease))
            self._audits.add(task)
            task.add_done_callback(self._audits.discard)

    async def _record_audit(self, outcome: str, lease: RefreshLease) -> None:
        try:
            await self._vault.record_audit(
                "refresh", outcome, user_id=lease.entry.user_id, entry_id=lease.entry.id
            )
        except VaultError as exc:
            log.error("refresh of entry %s not audited: %s", lease.entry.id, exc)
