"""The vault: validate, seal, and run one statement per call."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from token_vault.crypto.keyring import Keyring, Sealed
from token_vault.storage.record import Backend, NewRow, SealedColumns, StoredRow
from token_vault.storage.url import DEFAULT_DATABASE_URL, DatabaseURL
from token_vault.vault.entry import TokenType, VaultEntry
from token_vault.vault.validation import (
    check_expires_at,
    check_identifier,
    check_metadata,
    check_token,
    check_token_type,
)

__all__ = ["ACCESS_TOKEN_TYPE", "Clock", "TokenVault", "connect_backend", "utc_now"]

# Associated-data label of cached access tokens: not a row type, only a binding.
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a label, not a secret

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def connect_backend(url: DatabaseURL, *, pool_size: int = 10) -> Backend:
    """Open the storage backend for ``url``."""
    if url.is_sqlite:
        from token_vault.storage.sqlite import SQLiteBackend

        return await SQLiteBackend.connect(url)
    from token_vault.storage.postgres import PostgresBackend

    return await PostgresBackend.connect(url, max_size=pool_size)


class TokenVault:
    """Encrypted refresh and offline tokens, one row each, on PostgreSQL or SQLite.

    Open with :meth:`open` (a URL and a keyring) or :meth:`from_env`, and close with
    :meth:`close` or ``async with``.
    """

    def __init__(self, backend: Backend, keyring: Keyring, *, clock: Clock = utc_now) -> None:
        self._backend = backend
        self._keyring = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenVault(dialect={self._backend.dialect!r}, keyring={self._keyring!r})"

    @classmethod
    async def open(
        cls,
        database_url: str | DatabaseURL | None,
        keyring: Keyring,
        *,
        clock: Clock = utc_now,
        pool_size: int = 10,
    ) -> TokenVault:
        """Connect to ``database_url`` (the embedded SQLite file when ``None``)."""
        if not isinstance(keyring, Keyring):
            raise TypeError("keyring must be a token_vault.Keyring")
        if not isinstance(database_url, DatabaseURL):
            database_url = DatabaseURL.parse(database_url or DEFAULT_DATABASE_URL)
        backend = await connect_backend(database_url, pool_size=pool_size)
        return cls(backend, keyring, clock=clock)

    @classmethod
    async def from_env(cls, *, clock: Clock = utc_now) -> TokenVault:
        """Open from ``TOKEN_VAULT_DATABASE_URL`` and ``TOKEN_VAULT_KEYS`` (or ``_KEYS_FILE``)."""
        from token_vault.config import VaultSettings

        settings = VaultSettings()
        return await cls.open(
            settings.database(), settings.keyring(), clock=clock, pool_size=settings.pool_size
        )

    async def __aenter__(self) -> TokenVault:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._backend.close()

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def now(self) -> datetime:
        """The vault's clock (UTC)."""
        return self._clock()

    # -- writes ----------------------------------------------------------------------

    async def upsert_refresh_token(
        self,
        user_id: str,
        token: str,
        expires_at: datetime,
        session_state: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store the user's one refresh token, in one statement; return the entry id.

        The first call inserts a row. Later calls keep its id, replace the ciphertext,
        expiry and session id, and merge ``metadata`` into the stored metadata in the
        database (shallow, new keys win) with ``updatedAt`` stamped.
        """
        row = self._new_row(user_id, token, TokenType.REFRESH, expires_at, session_state, metadata)
        return await self._backend.upsert_refresh(row)

    async def store(
        self,
        user_id: str,
        token: str,
        *,
        token_type: TokenType | str = TokenType.OFFLINE,
        expires_at: datetime,
        session_state: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Store a token; offline tokens get a new row each, refresh tokens are upserted."""
        kind = check_token_type(token_type)
        if kind is TokenType.REFRESH:
            return await self.upsert_refresh_token(
                user_id, token, expires_at, session_state, metadata
            )
        row = self._new_row(user_id, token, kind, expires_at, session_state, metadata)
        return await self._backend.insert(row)

    def _new_row(
        self,
        user_id: str,
        token: str,
        token_type: TokenType,
        expires_at: datetime,
        session_state: str | None,
        metadata: dict[str, Any] | None,
    ) -> NewRow:
        user_id = check_identifier("user_id", user_id)
        token = check_token(token)
        expires = check_expires_at(expires_at)
        if session_state is not None:
            session_state = check_identifier("session_state", session_state)
        metadata_json = check_metadata(metadata)
        sealed = self._keyring.seal(token, user_id=user_id, token_type=token_type.value)
        return NewRow(
            id=str(uuid.uuid4()),
            user_id=user_id,
            token_type=token_type.value,
            ciphertext=sealed.ciphertext,
            nonce=sealed.nonce,
            key_id=sealed.key_id,
            expires_at=expires,
            session_state=session_state,
            metadata_json=metadata_json,
            now=self._clock(),
        )

    # -- reads -----------------------------------------------------------------------

    async def retrieve(self, entry_id: str) -> VaultEntry | None:
        """The entry with this id, decrypted, or ``None``."""
        row = await self._backend.fetch(check_identifier("entry_id", entry_id))
        return self.entry_from_row(row) if row is not None else None

    async def get_refresh_token(self, user_id: str) -> VaultEntry | None:
        """The user's refresh-token entry, decrypted, or ``None``."""
        row = await self._backend.fetch_refresh(check_identifier("user_id", user_id))
        return self.entry_from_row(row) if row is not None else None

    async def list_tokens(
        self, user_id: str, token_type: TokenType | str | None = None
    ) -> list[VaultEntry]:
        """The user's entries, oldest first, optionally of one type."""
        kind = check_token_type(token_type).value if token_type is not None else None
        rows = await self._backend.fetch_user(check_identifier("user_id", user_id), kind)
        return [self.entry_from_row(row) for row in rows]

    def entry_from_row(self, row: StoredRow) -> VaultEntry:
        """Decrypt a stored row into an entry (raises :class:`DecryptionError`)."""
        token = self._keyring.open(
            Sealed(row.ciphertext, row.nonce, row.key_id),
            user_id=row.user_id,
            token_type=row.token_type,
            entry_id=row.id,
        )
        return VaultEntry(
            id=row.id,
            user_id=row.user_id,
            token_type=TokenType(row.token_type),
            token=token,
            key_id=row.key_id,
            expires_at=row.expires_at.astimezone(UTC),
            session_state=row.session_state,
            metadata=row.metadata,
            created_at=row.created_at.astimezone(UTC),
            updated_at=row.updated_at.astimezone(UTC),
            needs_reauth=row.needs_reauth,
            access_expires_at=(
                row.access_expires_at.astimezone(UTC) if row.access_expires_at else None
            ),
        )

    # -- the access-token cache (used by token_vault.oidc) --------------------------------

    def seal(self, token: str, *, user_id: str, token_type: str) -> SealedColumns:
        sealed = self._keyring.seal(token, user_id=user_id, token_type=token_type)
        return SealedColumns(sealed.ciphertext, sealed.nonce, sealed.key_id)

    def open_access_token(self, row: StoredRow) -> str | None:
        """The cached access token of a refresh row, decrypted, or ``None``."""
        if row.access is None:
            return None
        return self._keyring.open(
            Sealed(row.access.ciphertext, row.access.nonce, row.access.key_id),
            user_id=row.user_id,
            token_type=ACCESS_TOKEN_TYPE,
            entry_id=row.id,
        )

    async def cache_access_token(
        self, entry_id: str, user_id: str, token: str, expires_at: datetime
    ) -> None:
        """Keep an access token, sealed, beside the user's refresh token."""
        sealed = self.seal(check_token(token), user_id=user_id, token_type=ACCESS_TOKEN_TYPE)
        await self._backend.cache_access(entry_id, sealed, check_expires_at(expires_at))

    # -- deletes ---------------------------------------------------------------------

    async def delete(self, entry_id: str) -> bool:
        """Delete one entry; ``True`` if it existed."""
        return await self._backend.delete(check_identifier("entry_id", entry_id))

    async def delete_user(self, user_id: str, *, token_type: TokenType | str | None = None) -> int:
        """Delete the user's entries (optionally of one type); returns how many."""
        kind = check_token_type(token_type).value if token_type is not None else None
        return await self._backend.delete_user(check_identifier("user_id", user_id), kind)

    async def delete_session(
        self, session_state: str, *, token_type: TokenType | str | None = None
    ) -> int:
        """Delete the entries of one provider session (optionally of one type)."""
        kind = check_token_type(token_type).value if token_type is not None else None
        return await self._backend.delete_session(
            check_identifier("session_state", session_state), kind
        )

    async def remember_logout_token(self, jti: str, expires_at: datetime) -> bool:
        """Record a back-channel logout token's ``jti``; ``False`` if it was seen before."""
        return await self._backend.remember_logout_token(
            check_identifier("jti", jti), check_expires_at(expires_at), self._clock()
        )

    async def stats(self) -> list[tuple[str, int, int, int]]:
        """Per token type: entries, expired entries, entries needing a new login."""
        return await self._backend.count_entries(self._clock())

    async def purge_expired(self) -> int:
        """Delete every entry whose ``expires_at`` has passed."""
        return await self.purge_expired_at(self._clock())

    async def purge_expired_at(self, now: datetime) -> int:
        return await self._backend.purge_expired(check_expires_at(now))
