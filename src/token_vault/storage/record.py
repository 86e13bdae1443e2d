"""Rows as the storage layer reads and writes them: ciphertext only, never plaintext."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = ["Backend", "NewRow", "StoredRow"]


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


class Backend(Protocol):
    """The few statements the vault runs, implemented once per database."""

    dialect: str

    async def upsert_refresh(self, row: NewRow) -> str: ...

    async def insert(self, row: NewRow) -> str: ...

    async def fetch(self, entry_id: str) -> StoredRow | None: ...

    async def fetch_refresh(self, user_id: str) -> StoredRow | None: ...

    async def fetch_user(self, user_id: str, token_type: str | None) -> list[StoredRow]: ...

    async def delete(self, entry_id: str) -> bool: ...

    async def delete_user(self, user_id: str) -> int: ...

    async def delete_session(self, session_state: str, token_type: str | None) -> int: ...

    async def purge_expired(self, now: datetime) -> int: ...

    async def close(self) -> None: ...
