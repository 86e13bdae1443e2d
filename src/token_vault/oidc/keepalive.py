"""Keep-alive: refresh the entries whose refresh token would lapse soon.

Providers end refresh tokens nobody uses (Keycloak's SSO idle timeout is 30 minutes by
default), so a backend job that needs a user's token days later finds it dead unless
something refreshes it in between. The refresher does: every ``interval`` it takes the
entries lapsing within ``window`` and refreshes each through the same lease as every
other refresh, so any number of replicas can run it at once (an entry someone else is
refreshing is skipped as ``busy``; one refreshed meanwhile as ``fresh``). Refreshes run
``concurrency`` at a time and start at most ``rate`` per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from token_vault.errors import VaultError
from token_vault.oidc.access import AccessTokens
from token_vault.vault.core import TokenVault
from token_vault.vault.refresh import ExpiringEntry

__all__ = ["OUTCOMES", "Refresher"]

log = logging.getLogger(__name__)

OUTCOMES = ("refreshed", "fresh", "busy", "needs_reauth", "gone", "failed")
Progress = Callable[[Counter[str], int], None]  # outcomes so far, entries in this pass
Observer = Callable[[str], None]  # called with each entry's outcome


class Refresher:
    """Keeps entries alive; see the module docstring."""

    def __init__(
        self,
        vault: TokenVault,
        access_tokens: AccessTokens,
        *,
        window: timedelta = timedelta(minutes=10),
        concurrency: int = 4,
        rate: float = 5.0,
        batch: int = 1000,
        observer: Observer | None = None,
    ) -> None:
        if concurrency < 1 or rate <= 0 or batch < 1:
            raise ValueError("concurrency, rate and batch must be positive")
        self._vault = vault
        self._access = access_tokens
        self._window = window
        self._concurrency = concurrency
        self._interval = 1.0 / rate
        self._batch = batch
        self._observer = observer
        self._next_start = 0.0

    async def run_once(self, progress: Progress | None = None) -> Counter[str]:
        """One pass over the entries lapsing within the window; the outcomes counted."""
        entries = await self._vault.entries_expiring(self._window, limit=self._batch)
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(self._concurrency)

        async def one(entry: ExpiringEntry) -> None:
            async with gate:
                await self._pace()
                outcome = await self._keep(entry)
            outcomes[outcome] += 1
            if self._observer is not None:
                self._observer(outcome)
            if progress is not None:
                progress(outcomes, len(entries))

        await asyncio.gather(*(one(entry) for entry in entries))
        return outcomes

    async def run(
        self,
        *,
        every: timedelta = timedelta(seconds=30),
        stop: asyncio.Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Pass after pass, ``every`` apart, until ``stop`` is set (or cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.run_once(progress)
            except VaultError as exc:  # the database is away: try again next pass
                log.warning("keep-alive pass failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every.total_seconds())

    async def _keep(self, entry: ExpiringEntry) -> str:
        try:
            return await self._access.keep_alive(entry.user_id, entry.entry_id, window=self._window)
        except VaultError as exc:
            log.warning("keep-alive of entry %s failed: %s", entry.entry_id, type(exc).__name__)
            return "failed"

    async def _pace(self) -> None:
        """Start at most ``rate`` refreshes per second across this refresher."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_start)
        self._next_start = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)
