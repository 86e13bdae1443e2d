"""Rows written the way an older schema allowed, for migration and CLI tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from token_vault import Keyring, TokenVault
from token_vault.storage.record import NewRow


async def write_raw(
    vault: TokenVault, keyring: Keyring, user: str, token_type: str, token: str, at: datetime
) -> str:
    """Write a row the way the old, index-less schema allowed: a plain insert."""
    sealed = keyring.seal(token, user_id=user, token_type=token_type)
    row = NewRow(
        id=str(uuid.uuid4()),
        user_id=user,
        token_type=token_type,
        ciphertext=sealed.ciphertext,
        nonce=sealed.nonce,
        key_id=sealed.key_id,
        expires_at=at + timedelta(days=1),
        session_state=None,
        metadata_json=None,
        now=at,
    )
    return await vault.backend.insert(row)
