"""Rows as the storage layer reads and writes them: ciphertext only, never plaintext.

A ciphertext, its nonce and its key id travel together as the keyring's
:class:`~token_vault.crypto.keyring.Sealed`, in every row shape below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

from token_vault.crypto.keyring import Sealed
from token_vault.storage.coalesce import BatchCounts
from token_vault.storage.outbox import DeliveryOutcome, DeliveryRow, EventRow
from token_vault.storage.schema import column_position

__all__ = [
    "AuditQuery",
    "AuditRecord",
    "Backend",
    "NewRow",
    "RefreshWrite",
    "StoredRow",
    "audit_record",
    "metadata_stamp",
    "stored_row",
]


def metadata_stamp(moment: datetime) -> str:
    """How times are written into metadata (``updatedAt``, ``lastRefresh``, ``loginTime``):
    UTC, milliseconds, ``Z``, as JavaScript's ``toISOString()`` writes them."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class NewRow:
    """What the vault asks the database to write (an insert, or the login upsert).

    ``access`` is the access token that came with the refresh token, if any: the login
    upsert stores both in its one statement.
    """

    id: str
    user_id: str
    token_type: str
    sealed: Sealed
    expires_at: datetime
    session_state: str | None
    metadata_json: str | None  # a JSON object, already validated
    now: datetime
    access: Sealed | None = None
    access_expires_at: datetime | None = None
    client_id: str | None = None  # offline entries kept per client (the login's)


@dataclass(frozen=True, slots=True)
class RefreshWrite:
    """The outcome of a refresh at the provider, written in one statement.

    ``refresh`` is ``None`` when the provider sent no new refresh token: the stored one
    stays; ``refresh_ttl`` is ``None`` when the provider did not say how long it lives.
    Lifetimes are relative: the database turns them into times on its own clock. The
    write applies only while ``owner`` holds the lease and the row still holds
    ``expected_nonce`` (a login that stored a newer token in the meantime wins).
    """

    entry_id: str
    owner: str
    expected_nonce: bytes = field(repr=False)
    refresh: Sealed | None
    refresh_ttl: timedelta | None
    session_state: str | None
    access: Sealed
    access_ttl: timedelta
    now: datetime


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as read back from ``auth_vault``."""

    id: str
    user_id: str
    token_type: str
    sealed: Sealed
    expires_at: datetime
    session_state: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    access: Sealed | None = None
    access_expires_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    needs_reauth: bool = False
    client_id: str | None = None


# The columns a row is built from, picked out of a record in one call.
_ROW_COLUMNS = (
    "id",
    "user_id",
    "token_type",
    "ciphertext",
    "nonce",
    "key_id",
    "expires_at",
    "session_state",
    "metadata",
    "created_at",
    "updated_at",
    "access_ciphertext",
    "access_nonce",
    "access_key_id",
    "access_expires_at",
    "lease_owner",
    "lease_expires_at",
    "needs_reauth",
    "client_id",
    "seal_version",
)
_pick_row_columns = itemgetter(*(column_position(name) for name in _ROW_COLUMNS))


def stored_row(record: Sequence[Any], parse_time: Callable[[Any], datetime]) -> StoredRow:
    """A fetched record of :data:`~token_vault.storage.schema.COLUMNS` as a row.

    ``parse_time`` turns the driver's time value into an aware ``datetime``.
    """
    (
        entry_id,
        user_id,
        token_type,
        ciphertext,
        nonce,
        key_id,
        expires_at,
        session_state,
        stored_metadata,
        created_at,
        updated_at,
        access_ciphertext,
        access_nonce,
        access_key_id,
        access_expires_at,
        lease_owner,
        lease_expires_at,
        needs_reauth,
        client_id,
        seal_version,
    ) = _pick_row_columns(record)
    access = None
    if access_ciphertext is not None:
        access = Sealed(
            bytes(access_ciphertext), bytes(access_nonce), access_key_id, int(seal_version)
        )
    return StoredRow(
        id=entry_id,
        user_id=user_id,
        token_type=token_type,
        sealed=Sealed(bytes(ciphertext), bytes(nonce), key_id, int(seal_version)),
        expires_at=parse_time(expires_at),
        session_state=session_state,
        metadata=json.loads(stored_metadata) if stored_metadata is not None else {},
        created_at=parse_time(created_at),
        updated_at=parse_time(updated_at),
        access=access,
        access_expires_at=parse_time(access_expires_at) if access_expires_at is not None else None,
        lease_owner=lease_owner,
        lease_expires_at=parse_time(lease_expires_at) if lease_expires_at is not None else None,
        needs_reauth=bool(needs_reauth),
        client_id=client_id,
    )


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One thing that happened to an entry (or to the vault). Never a token."""

    at: datetime
    action: str  # token, refresh, write, delete, login, logout, backchannel_logout, ...
    outcome: str  # ok, refused, invalid_grant, error, ...
    caller: str | None = None
    user_id: str | None = None
    entry_id: str | None = None
    request_id: str | None = None
    client_address: str | None = None
    id: int | None = None


def audit_record(row: Sequence[Any], parse_time: Callable[[Any], datetime]) -> AuditRecord:
    """A fetched ``id, at, action, outcome, caller, user_id, entry_id, request_id,
    client_address`` row as a record."""
    return AuditRecord(
        at=parse_time(row[1]),
        action=row[2],
        outcome=row[3],
        caller=row[4],
        user_id=row[5],
        entry_id=row[6],
        request_id=row[7],
        client_address=row[8],
        id=int(row[0]),
    )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit records to read: each filter applies when given; newest first."""

    user_id: str | None = None
    caller: str | None = None
    action: str | None = None
    since: datetime | None = None
    limit: int = 100


class Backend(Protocol):
    """The few statements the vault runs, implemented once per database."""

    dialect: str

    async def upsert_refresh(self, row: NewRow) -> str: ...

    async def insert(self, row: NewRow) -> str: ...

    async def upsert_offline(self, row: NewRow) -> str: ...

    async def fetch_client_offline(self, user_id: str, client_id: str) -> StoredRow | None: ...

    async def fetch(self, entry_id: str) -> StoredRow | None: ...

    async def insert_audit(self, record: AuditRecord) -> None: ...

    async def fetch_audit(self, query: AuditQuery) -> list[AuditRecord]: ...

    async def purge_audit(self, before: datetime) -> int: ...

    async def fetch_expiring(
        self, now: datetime, until: datetime, limit: int
    ) -> list[tuple[str, str, datetime]]: ...

    async def fetch_refresh(self, user_id: str) -> StoredRow | None: ...

    async def fetch_user(self, user_id: str, token_type: str | None) -> list[StoredRow]: ...

    async def delete(self, entry_id: str) -> bool: ...

    async def delete_user(self, user_id: str, token_type: str | None) -> int: ...

    async def delete_session(self, session_state: str, token_type: str | None) -> int: ...

    async def purge_expired(self, now: datetime) -> int: ...

    async def fetch_for_refresh(
        self, user_id: str, now: datetime
    ) -> tuple[list[StoredRow], datetime]:
        """The user's rows and the time by the clock leases use (``now`` on SQLite)."""
        ...

    async def claim_refresh(
        self, entry_id: str, owner: str, now: datetime, lease: timedelta
    ) -> tuple[StoredRow, datetime] | None: ...

    async def renew_lease(
        self, entry_id: str, owner: str, now: datetime, lease: timedelta
    ) -> bool: ...

    async def record_refresh(self, write: RefreshWrite) -> datetime | None:
        """The access token's expiry as stored, or ``None`` when the write did not apply."""
        ...

    async def forget_access(self, entry_id: str) -> bool: ...

    async def release_lease(self, entry_id: str, owner: str) -> None: ...

    async def mark_needs_reauth(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime
    ) -> bool: ...

    async def remember_logout_token(
        self, jti: str, expires_at: datetime, now: datetime
    ) -> bool: ...

    async def rows_on_other_keys(
        self, primary: str, limit: int, now: datetime
    ) -> list[StoredRow]: ...

    async def reseal(
        self,
        entry_id: str,
        expected_nonce: bytes,
        refresh: Sealed,
        access: Sealed | None,
        now: datetime,
    ) -> bool: ...

    async def count_by_key(self) -> dict[str, int]: ...

    async def count_entries(self, now: datetime) -> list[tuple[str, int, int, int]]: ...

    async def schema_revision(self) -> str | None: ...

    # The outbox: each change below writes its events in the same statement or
    # transaction; a delivery worker claims, sends and records them.

    async def mark_needs_reauth_with_event(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime, event_id: str
    ) -> bool: ...

    async def delete_session_with_events(
        self, session_state: str, token_type: str | None, event_type: str, now: datetime
    ) -> int: ...

    async def delete_user_with_events(
        self, user_id: str, token_type: str | None, event_type: str, now: datetime
    ) -> int: ...

    async def purge_expired_with_events(self, cutoff: datetime, now: datetime) -> int:
        """Delete entries expired at ``cutoff``; their events are stamped ``now``."""
        ...

    async def claim_events(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[EventRow]: ...

    async def record_delivery(self, outcome: DeliveryOutcome) -> bool:
        """Log the attempt; ``True`` when the event's state changed (the lease was ours)."""
        ...

    async def fetch_events(
        self, state: str | None, user_id: str | None, limit: int
    ) -> list[EventRow]: ...

    async def fetch_event(self, event_id: str) -> EventRow | None: ...

    async def fetch_deliveries(self, event_ids: list[str]) -> list[DeliveryRow]: ...

    async def requeue_event(self, event_id: str, now: datetime) -> bool: ...

    async def purge_events(self, before: datetime) -> int: ...

    def batch_counts(self) -> dict[str, BatchCounts]:
        """Per coalesced statement (or SQLite's group commit): the batches sent so far."""
        ...

    async def close(self) -> None: ...
