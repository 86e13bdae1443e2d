"""Rows written the way an older schema allowed, for migration and CLI tests."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa

from token_vault import DatabaseURL, Keyring
from token_vault.storage.migrate import run_on_connection
from token_vault.storage.sqlite import to_text

# Revision 0001's columns only: the statement works on every revision since.
_INSERT = sa.text(
    "INSERT INTO auth_vault (id, user_id, token_type, ciphertext, nonce, key_id, expires_at, "
    "session_state, metadata, created_at, updated_at) VALUES (:id, :user_id, :token_type, "
    ":ciphertext, :nonce, :key_id, :expires_at, NULL, :metadata, :at, :at)"
)


async def write_raw(
    url: DatabaseURL, keyring: Keyring, user: str, token_type: str, token: str, at: datetime
) -> str:
    """Write a row the way the old, index-less schema allowed: a plain insert, with no
    upsert to stop a second refresh token for the user."""
    sealed = keyring.seal(token, user_id=user, token_type=token_type)
    entry_id = str(uuid.uuid4())
    times: dict[str, object] = {"expires_at": at + timedelta(days=1), "at": at}
    if url.is_sqlite:
        times = {name: to_text(value) for name, value in times.items()}  # type: ignore[arg-type]
    params = {
        "id": entry_id,
        "user_id": user,
        "token_type": token_type,
        "ciphertext": sealed.ciphertext,
        "nonce": sealed.nonce,
        "key_id": sealed.key_id,
        "metadata": json.dumps({"updatedAt": at.isoformat()}),
        **times,
    }
    await run_on_connection(url, lambda c: c.execute(_INSERT, params))
    return entry_id
