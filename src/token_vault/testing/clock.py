"""A clock that stands still until told to move: pass it as ``clock=`` to the vault and
to :class:`~token_vault.AccessTokens`, and expiry becomes a line in a test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["FrozenClock"]


class FrozenClock:
    """Callable like :func:`token_vault.vault.core.utc_now`; returns the same UTC time
    until :meth:`advance` or :meth:`set` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = self._aware(start or datetime(2030, 1, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self._now

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()!r})"

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds); returns the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not go back; use set()")
        self._now += step
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = self._aware(moment)

    @staticmethod
    def _aware(moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware datetime")
        return moment.astimezone(UTC)
