"""The outbox's rows as storage reads and writes them: events for the app and the log of
their deliveries. An event names a user and an entry, never holds a token.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from token_vault.storage.schema import event

__all__ = [
    "DeliveryOutcome",
    "DeliveryRow",
    "EventRow",
    "delivery_row",
    "event_row",
    "new_event_id",
]

_POSITIONS = {column.name: position for position, column in enumerate(event.columns)}


def new_event_id() -> str:
    """A fresh event id: the webhook's idempotency key (``webhook-id``)."""
    return f"evt_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class EventRow:
    """One event in the outbox, with its delivery state."""

    id: str
    type: str
    user_id: str
    entry_id: str | None
    token_type: str | None
    occurred_at: datetime
    state: str  # pending, delivered, failed
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None


def event_row(record: Sequence[Any], parse_time: Callable[[Any], datetime]) -> EventRow:
    """A fetched record of :data:`~token_vault.storage.schema.EVENT_COLUMNS` as a row."""

    def at(name: str) -> Any:
        return record[_POSITIONS[name]]

    def time_or_none(name: str) -> datetime | None:
        value = at(name)
        return parse_time(value) if value is not None else None

    return EventRow(
        id=at("id"),
        type=at("type"),
        user_id=at("user_id"),
        entry_id=at("entry_id"),
        token_type=at("token_type"),
        occurred_at=parse_time(at("occurred_at")),
        state=at("state"),
        attempts=int(at("attempts")),
        next_attempt_at=parse_time(at("next_attempt_at")),
        lease_owner=at("lease_owner"),
        lease_expires_at=time_or_none("lease_expires_at"),
        delivered_at=time_or_none("delivered_at"),
        last_status=at("last_status"),
        last_error=at("last_error"),
    )


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """One delivery attempt's result, and what becomes of the event.

    ``state`` is ``delivered`` (the app answered 2xx), ``pending`` (try again after
    ``retry_in``) or ``failed`` (no more attempts until someone replays it).
    """

    event_id: str
    worker: str
    attempt: int
    at: datetime
    status: int | None
    error: str | None
    duration_ms: int
    state: str
    retry_in: timedelta


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One line of the delivery log."""

    event_id: str
    attempt: int
    at: datetime
    status: int | None
    error: str | None
    duration_ms: int
    worker: str


def delivery_row(record: Sequence[Any], parse_time: Callable[[Any], datetime]) -> DeliveryRow:
    """A fetched ``event_id, attempt, at, status, error, duration_ms, worker`` record."""
    return DeliveryRow(
        event_id=record[0],
        attempt=int(record[1]),
        at=parse_time(record[2]),
        status=record[3],
        error=record[4],
        duration_ms=int(record[5]),
        worker=record[6],
    )
