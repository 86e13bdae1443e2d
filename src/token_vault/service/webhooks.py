"""Delivering the outbox's events to the app's webhook, signed per Standard Webhooks.

Each event is POSTed as JSON with the headers ``webhook-id`` (the event id: the app's
idempotency key, the same on every attempt), ``webhook-timestamp`` and
``webhook-signature`` (``v1,`` HMAC-SHA256 of ``id.timestamp.body`` with the
``whsec_`` secret), which ``standardwebhooks.Webhook(secret).verify(body, headers)``
checks. A 2xx answer delivers it; anything else (another status, a timeout, a refused
connection) is retried with exponential back-off, so the app hears of every event at
least once and must treat a repeated ``webhook-id`` as already handled. Every attempt is
logged in the database with its status and time.

Any number of workers may run (inside each ``serve`` replica, or as ``token-vault events
deliver``): each claims a few due events with a lease before sending them, so two
workers never send one event at once; a worker that dies lets its lease lapse and the
event is sent again. Nothing here logs a token, a secret or a response body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks import Webhook

from token_vault import __version__
from token_vault.errors import ConfigurationError, VaultError
from token_vault.vault.core import TokenVault
from token_vault.vault.events import DeliveryOutcome, EventRow, EventState, event_body

__all__ = ["Deliverer", "DeliveryPolicy", "check_secret", "new_secret"]

log = logging.getLogger(__name__)

_SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
_LEASE_MARGIN = timedelta(seconds=30)


def new_secret() -> str:
    """A fresh signing secret in Standard Webhooks' form: ``whsec_`` and 32 random bytes."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> Webhook:
    """The signer for ``secret`` (``whsec_`` + base64 of 24-64 bytes), or
    :class:`ConfigurationError` saying what is wrong (never the secret itself)."""
    if not secret.startswith(_SECRET_PREFIX):
        raise ConfigurationError("must start with whsec_ (`token-vault events secret`)")
    try:
        raw = base64.b64decode(secret[len(_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("is not base64 after whsec_") from None
    if not _MIN_SECRET_BYTES <= len(raw) <= _MAX_SECRET_BYTES:
        raise ConfigurationError(
            f"must hold {_MIN_SECRET_BYTES} to {_MAX_SECRET_BYTES} random bytes (has {len(raw)})"
        )
    return Webhook(secret)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Where events go and how hard the worker tries."""

    url: str
    secret: str = field(repr=False)
    timeout: float = 10.0
    retry_base: float = 5.0  # the first retry waits this long; each later one twice as long
    retry_max: float = 3600.0
    max_attempts: int = 25
    poll_interval: float = 2.0
    concurrency: int = 4

    @property
    def lease(self) -> timedelta:
        """How long a claim keeps other workers off an event: one request and a margin."""
        return timedelta(seconds=self.timeout) + _LEASE_MARGIN

    def retry_in(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based): exponential, capped, with
        up to 20% less at random so a fleet of failed events does not retry in step."""
        delay = min(self.retry_base * 2 ** (attempt - 1), self.retry_max)
        jitter = 1.0 - secrets.randbelow(201) / 1000
        return timedelta(seconds=delay * jitter)


class Deliverer:
    """Sends due events from the vault's outbox until stopped."""

    def __init__(
        self,
        vault: TokenVault,
        policy: DeliveryPolicy,
        *,
        client: httpx.AsyncClient | None = None,
        observer: Callable[[str], None] | None = None,
    ) -> None:
        self._vault = vault
        self._policy = policy
        self._signer = check_secret(policy.secret)
        self._client = client or httpx.AsyncClient(
            timeout=policy.timeout,
            follow_redirects=False,
            headers={"user-agent": f"token-vault/{__version__}"},
        )
        self._owns_client = client is None
        self._observer = observer
        self.worker = f"deliver-{secrets.token_hex(6)}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due events now (the vault calls this when it wrote some)."""
        self._wake.set()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def run(self) -> None:
        """Deliver due events, then wait for new ones (a wake-up or the poll interval);
        until cancelled. A database that is down is waited out."""
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
            except VaultError as exc:
                log.warning("event delivery paused: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._policy.poll_interval)

    async def deliver_due(self) -> int:
        """Send every event due now, a few at a time; how many attempts were made."""
        attempts = 0
        while True:
            claimed = await self._vault.claim_events(
                self.worker, lease=self._policy.lease, limit=self._policy.concurrency
            )
            if not claimed:
                return attempts
            await asyncio.gather(*(self._deliver(event) for event in claimed))
            attempts += len(claimed)

    async def _deliver(self, event: EventRow) -> None:
        outcome = await self._attempt(event)
        if self._observer is not None:
            self._observer(outcome.state)
        level = logging.INFO if outcome.state == EventState.DELIVERED else logging.WARNING
        log.log(
            level,
            "event %s (%s) attempt %d: %s -> %s",
            event.id,
            event.type,
            outcome.attempt,
            outcome.status if outcome.status is not None else outcome.error,
            outcome.state,
        )
        # Shielded: a worker stopped mid-write still records what the app was told.
        await asyncio.shield(self._vault.record_delivery(outcome))

    async def _attempt(self, event: EventRow) -> DeliveryOutcome:
        attempt = event.attempts + 1
        body = json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False)
        at = self._vault.now()
        headers = self._headers(event.id, body, at)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                self._policy.url, content=body.encode(), headers=headers
            )
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        duration_ms = int((time.monotonic() - started) * 1000)
        if error is None:
            state, retry_in = EventState.DELIVERED, timedelta(0)
        elif attempt >= self._policy.max_attempts:
            state, retry_in = EventState.FAILED, timedelta(0)
        else:
            state, retry_in = EventState.PENDING, self._policy.retry_in(attempt)
        return DeliveryOutcome(
            event_id=event.id,
            worker=self.worker,
            attempt=attempt,
            at=at,
            status=status,
            error=error,
            duration_ms=duration_ms,
            state=state.value,
            retry_in=retry_in,
        )

    def _headers(self, event_id: str, body: str, at: datetime) -> dict[str, str]:
        at = at.astimezone(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._signer.sign(event_id, at, body),
        }
