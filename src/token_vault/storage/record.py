"""Rows as the storage layer reads and writes them: ciphertext only, never plaintext."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["Backend", "NewRow", "RefreshWrite", "SealedColumns", "StoredRow", "metadata_stamp"]


def metadata_stamp(moment: datetime) -> str:
    """How times are written into metadata (``updatedAt``, ``lastRefresh``, ``loginTime``):
    UTC, milliseconds, ``Z``, as JavaScript's ``toISOString()`` writes them."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SealedColumns:
    """A ciphertext, its nonce and its key id, as three columns."""

    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str


@dataclass(frozen=True, slots=True)
class NewRow:
    """What the vault asks the database to write."""

    id: str
    user_id: str
    token_type: str
    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str
    expires_at: datetime
    session_state: str | None
    metadata_json: str | None  # a JSON object, already validated
    now: datetime


@dataclass(frozen=True, slots=True)
class RefreshWrite:
    """The outcome of a refresh at the provider, written in one statement.

    ``refresh`` is ``None`` when the provider sent no new refresh token: the stored one
    stays. The write applies only while the row still holds ``expected_nonce`` (a login
    that stored a newer token in the meantime wins) and releases ``owner``'s lease.
    """

    entry_id: str
    owner: str
    expected_nonce: bytes = field(repr=False)
    refresh: SealedColumns | None
    refresh_expires_at: datetime | None
    session_state: str | None
    access: SealedColumns
    access_expires_at: datetime
    now: datetime


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A row as read back from ``auth_vault``."""

    id: str
    user_id: str
    token_type: str
    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str
    expires_at: datetime
    session_state: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    access: SealedColumns | None = None
    access_expires_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    needs_reauth: bool = False


class Backend(Protocol):
    """The few statements the vault runs, implemented once per database."""

    dialect: str

    async def upsert_refresh(self, row: NewRow) -> str: ...

    async def insert(self, row: NewRow) -> str: ...

    async def fetch(self, entry_id: str) -> StoredRow | None: ...

    async def fetch_refresh(self, user_id: str) -> StoredRow | None: ...

    async def fetch_user(self, user_id: str, token_type: str | None) -> list[StoredRow]: ...

    async def delete(self, entry_id: str) -> bool: ...

    async def delete_user(self, user_id: str, token_type: str | None) -> int: ...

    async def delete_session(self, session_state: str, token_type: str | None) -> int: ...

    async def purge_expired(self, now: datetime) -> int: ...

    async def claim_refresh(
        self, user_id: str, owner: str, now: datetime, until: datetime
    ) -> StoredRow | None: ...

    async def record_refresh(self, write: RefreshWrite) -> bool: ...

    async def cache_access(
        self, entry_id: str, access: SealedColumns, expires_at: datetime
    ) -> None: ...

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
        refresh: SealedColumns,
        access: SealedColumns | None,
        now: datetime,
    ) -> bool: ...

    async def count_by_key(self) -> dict[str, int]: ...

    async def count_entries(self, now: datetime) -> list[tuple[str, int, int, int]]: ...

    async def close(self) -> None: ...
