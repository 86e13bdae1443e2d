"""What the vault hands back: frozen entries whose token is masked in ``repr``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from token_vault.storage.record import metadata_stamp

__all__ = ["TokenType", "VaultEntry", "mask", "metadata_stamp"]


class TokenType(StrEnum):
    """Kinds of stored token: one refresh token per user, any number of offline ones."""

    REFRESH = "refresh"
    OFFLINE = "offline"


def mask(token: str) -> str:
    """A display form that shows the length and nothing of the secret."""
    return f"<{len(token)} chars, masked>"


@dataclass(frozen=True, slots=True)
class VaultEntry:
    """A decrypted vault row. ``repr`` masks the token; the metadata is shown as stored."""

    id: str
    user_id: str
    token_type: TokenType
    token: str = field(repr=False)
    key_id: str
    expires_at: datetime
    session_state: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    needs_reauth: bool = False
    access_expires_at: datetime | None = None
    client_id: str | None = None  # offline entries stored by a login: the client's id

    def __repr__(self) -> str:
        return (
            f"VaultEntry(id={self.id!r}, user_id={self.user_id!r}, "
            f"token_type={self.token_type.value!r}, token={mask(self.token)!r}, "
            f"key_id={self.key_id!r}, expires_at={self.expires_at.isoformat()!r}, "
            f"session_state={self.session_state!r}, needs_reauth={self.needs_reauth!r})"
        )

    def is_expired_at(self, now: datetime) -> bool:
        return self.expires_at <= now
