"""Rows sealed and opened: the vault's one place between the keyring and storage rows.

Every ciphertext is bound to its row by associated data (user id, token type, key id);
cached access tokens are bound as type ``access`` of the same user.
"""

from __future__ import annotations

from datetime import UTC, datetime

from token_vault.crypto.keyring import Keyring, Sealed
from token_vault.storage.record import StoredRow
from token_vault.vault.entry import TokenType, VaultEntry
from token_vault.vault.refresh import ACCESS_TOKEN_TYPE, CachedAccessToken, RefreshState

__all__ = ["RowSealer"]


class RowSealer:
    """Seals tokens for rows and opens stored rows into entries, with one keyring."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def seal(self, token: str, *, user_id: str, token_type: str, entry_id: str) -> Sealed:
        """Offline entries are many per user: their ciphertexts are bound to the entry id
        as well (format 2). A user's one refresh entry is already singled out by user and
        type (format 1)."""
        bound = entry_id if token_type == TokenType.OFFLINE.value else None
        return self.keyring.seal(token, user_id=user_id, token_type=token_type, entry_id=bound)

    def seal_access(self, token: str, *, user_id: str, entry_id: str, version: int) -> Sealed:
        """An access token cached in a row, sealed in the format (``version``) of the
        row's own token."""
        bound = entry_id if version == 2 else None
        return self.keyring.seal(
            token, user_id=user_id, token_type=ACCESS_TOKEN_TYPE, entry_id=bound
        )

    def entry(self, row: StoredRow) -> VaultEntry:
        """Decrypt a stored row into an entry (raises :class:`DecryptionError`)."""
        token = self.keyring.open(
            row.sealed, user_id=row.user_id, token_type=row.token_type, entry_id=row.id
        )
        return VaultEntry(
            id=row.id,
            user_id=row.user_id,
            token_type=TokenType(row.token_type),
            token=token,
            key_id=row.sealed.key_id,
            expires_at=row.expires_at.astimezone(UTC),
            session_state=row.session_state,
            metadata=row.metadata,
            created_at=row.created_at.astimezone(UTC),
            updated_at=row.updated_at.astimezone(UTC),
            needs_reauth=row.needs_reauth,
            access_expires_at=(
                row.access_expires_at.astimezone(UTC) if row.access_expires_at else None
            ),
            client_id=row.client_id,
        )

    def access(self, row: StoredRow) -> CachedAccessToken | None:
        """The row's cached access token, decrypted, or ``None``."""
        if row.access is None or row.access_expires_at is None:
            return None
        token = self.keyring.open(
            row.access, user_id=row.user_id, token_type=ACCESS_TOKEN_TYPE, entry_id=row.id
        )
        return CachedAccessToken(token, row.access_expires_at.astimezone(UTC))

    def state(self, row: StoredRow, now: datetime) -> RefreshState:
        return RefreshState(
            entry_id=row.id,
            user_id=row.user_id,
            token_type=TokenType(row.token_type),
            needs_reauth=row.needs_reauth,
            access=None if row.needs_reauth else self.access(row),
            now=now.astimezone(UTC),
        )
