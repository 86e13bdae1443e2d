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
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from token_vault.errors import ProviderResponseError, ReauthRequiredError, UnavailableError
from token_vault.oidc.provider import OpenIDProvider, TokenSet
from token_vault.storage.record import RefreshWrite, StoredRow
from token_vault.vault.core import ACCESS_TOKEN_TYPE, Clock, TokenVault, utc_now
from token_vault.vault.entry import mask
from token_vault.vault.validation import check_identifier, check_token

__all__ = ["AccessToken", "AccessTokens", "RefreshObserver"]

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

    def _fresh(self, row: StoredRow) -> AccessToken | None:
        if row.access is None or row.access_expires_at is None:
            return None
        if row.access_expires_at - self._margin <= self._clock():
            return None
        token = self._vault.open_access_token(row)
        assert token is not None
        return AccessToken(row.user_id, token, row.access_expires_at, refreshed=False)

    async def _cached(self, user_id: str) -> AccessToken | None:
        row = await self._vault.backend.fetch_refresh(user_id)
        if row is None:
            raise ReauthRequiredError(user_id, "no_refresh_token")
        if row.needs_reauth:
            raise ReauthRequiredError(user_id, "invalid_grant")
        return self._fresh(row)

    async def _refresh(self, user_id: str, *, force: bool = False) -> AccessToken:
        deadline = self._clock() + self._wait
        backend = self._vault.backend
        while True:
            now = self._clock()
            row = await backend.claim_refresh(user_id, self._owner, now, now + self._lease)
            if row is not None:
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
            if row.needs_reauth:
                raise ReauthRequiredError(user_id, "invalid_grant")
            fresh = None if force else self._fresh(row)
            if fresh is not None:
                return fresh
            return await self._refresh_at_provider(row)
        finally:
            # A no-op when the outcome was written (the write released the lease).
            await asyncio.shield(backend.release_lease(row.id, self._owner))

    async def _refresh_at_provider(self, row: StoredRow) -> AccessToken:
        entry = self._vault.entry_from_row(row)
        started = asyncio.get_running_loop().time()
        try:
            tokens = await self._provider.refresh(entry.token, user_id=row.user_id)
            if tokens.id_token is not None:
                await self._provider.validate_id_token(tokens.id_token, subject=row.user_id)
        except ReauthRequiredError:
            self._observe("invalid_grant", started)
            await self._vault.backend.mark_needs_reauth(
                row.id, self._owner, row.nonce, self._clock()
            )
            raise
        except BaseException:
            self._observe("error", started)
            raise
        self._observe("ok", started)
        return await self._record(row, entry.token, tokens)

    async def _record(self, row: StoredRow, old_refresh: str, tokens: TokenSet) -> AccessToken:
        now = self._clock()
        rotated = tokens.refresh_token if tokens.refresh_token != old_refresh else None
        ttl = timedelta(seconds=tokens.expires_in) if tokens.expires_in else None
        access_expires_at = now + (ttl or self._default_access_ttl)
        refresh_ttl = tokens.refresh_expires_in
        try:
            access = self._vault.seal(
                check_token(tokens.access_token),
                user_id=row.user_id,
                token_type=ACCESS_TOKEN_TYPE,
            )
            refresh = (
                self._vault.seal(
                    check_token(rotated), user_id=row.user_id, token_type=row.token_type
                )
                if rotated is not None
                else None
            )
            session_state = (
                check_identifier("session_state", tokens.session_state)
                if tokens.session_state is not None
                else None
            )
        except ValueError:
            raise ProviderResponseError("provider returned a token that cannot be stored") from None
        write = RefreshWrite(
            entry_id=row.id,
            owner=self._owner,
            expected_nonce=row.nonce,
            refresh=refresh,
            refresh_expires_at=now + timedelta(seconds=refresh_ttl) if refresh_ttl else None,
            session_state=session_state,
            access=access,
            access_expires_at=access_expires_at,
            now=now,
        )
        await asyncio.shield(self._vault.backend.record_refresh(write))
        return AccessToken(row.user_id, tokens.access_token, access_expires_at, refreshed=True)

    def _observe(self, outcome: str, started: float) -> None:
        if self._observer is not None:
            self._observer(outcome, asyncio.get_running_loop().time() - started)
