"""Rows written the way an older schema allowed, for migration and CLI tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from token_vault import DatabaseURL, Keyring
from token_vault.storage import open_backend
from token_vault.storage.record import NewRow


async def write_raw(
    url: DatabaseURL, keyring: Keyring, user: str, token_type: str, token: str, at: datetime
) -> str:
    """Write a row the way the old, index-less schema allowed: a plain insert, straight
    through storage (the vault itself would upsert)."""
    sealed = keyring.seal(token, user_id=user, token_type=token_type)
    row = NewRow(
        id=str(uuid.uuid4()),
        user_id=user,
        token_type=token_type,
        sealed=sealed,
        expires_at=at + timedelta(days=1),
        session_state=None,
        metadata_json=None,
        now=at,
    )
    backend = await open_backend(url)
    try:
        return await backend.insert(row)
    finally:
        await backend.close()
