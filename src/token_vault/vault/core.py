"""The vault: validate, seal, and run one statement per call.

:class:`TokenVault` is the only door to storage. The OpenID layer, the service and the
CLI read and change stored state through its methods, including the refresh flow's
(cached access token, lease, outcome, re-login flag) and key rotation; they never see a
storage row, a backend or a ciphertext.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from token_vault.crypto.keyring import Keyring
from token_vault.errors import DecryptionError, ValidationError
from token_vault.storage import open_backend
from token_vault.storage.coalesce import BatchCounts
from token_vault.storage.migrate import head_revision
from token_vault.storage.outbox import new_event_id
from token_vault.storage.record import Backend, NewRow, RefreshWrite, StoredRow
from token_vault.storage.url import DEFAULT_DATABASE_URL, DatabaseURL
from token_vault.vault import rotation
from token_vault.vault.audit import AuditQuery, AuditRecord, audit_context
from token_vault.vault.entry import TokenType, VaultEntry
from token_vault.vault.events import DeliveryOutcome, DeliveryRow, EventRow, EventType
from token_vault.vault.refresh import ExpiringEntry, RefreshLease, RefreshOutcome, RefreshState
from token_vault.vault.sealer import RowSealer
from token_vault.vault.validation import (
    check_expires_at,
    check_identifier,
    check_metadata,
    check_token,
    check_token_type,
)

__all__ = ["Clock", "SchemaStatus", "TokenVault", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """The database's schema revision and the newest one this version knows."""

    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def _source_row(rows: list[StoredRow], now: datetime, entry_id: str | None) -> StoredRow | None:
    """Which of a user's rows access tokens come from (see ``refresh_state``)."""
    if entry_id is not None:
        return next((row for row in rows if row.id == entry_id), None)
    refresh = next((row for row in rows if row.token_type == TokenType.REFRESH.value), None)
    if refresh is not None and not refresh.needs_reauth:
        return refresh
    live_offline = [
        row
        for row in rows
        if row.token_type == TokenType.OFFLINE.value
        and not row.needs_reauth
        and row.expires_at > now
    ]
    if live_offline:
        return max(live_offline, key=lambda row: (row.created_at, row.id))
    return refresh


def _lifetime(value: timedelta | None, field: str) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValidationError(field, "must be a non-negative timedelta")
    return value


class TokenVault:
    """Encrypted refresh and offline tokens, one row each, on PostgreSQL or SQLite.

    Open with :meth:`open` (a URL and a keyring) and close with :meth:`close` or
    ``async with``. :meth:`token_vault.VaultSettings.open_vault` opens one from the
    environment.
    """

    def __init__(
        self, backend: Backend, keyring: Keyring, *, clock: Clock = utc_now, events: bool = False
    ) -> None:
        self._backend = backend
        self._sealer = RowSealer(keyring)
        self._clock = clock
        self._events = events
        self._event_listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"TokenVault(dialect={self.dialect!r}, keyring={self.keyring!r})"

    @classmethod
    async def open(
        cls,
        database_url: str | DatabaseURL | None,
        keyring: Keyring,
        *,
        clock: Clock = utc_now,
        pool_size: int = 10,
        events: bool = False,
    ) -> TokenVault:
        """Connect to ``database_url`` (the embedded SQLite file when ``None``).

        With ``events``, an entry that starts needing a new login, is removed by
        back-channel logout or is purged as expired leaves an event in the outbox, for the
        app's webhook (see :mod:`token_vault.vault.events`).
        """
        if not isinstance(keyring, Keyring):
            raise TypeError("keyring must be a token_vault.Keyring")
        if not isinstance(database_url, DatabaseURL):
            database_url = DatabaseURL.parse(database_url or DEFAULT_DATABASE_URL)
        backend = await open_backend(database_url, pool_size=pool_size)
        return cls(backend, keyring, clock=clock, events=events)

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
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self._backend.dialect

    @property
    def keyring(self) -> Keyring:
        return self._sealer.keyring

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
        *,
        access_token: str | None = None,
        access_expires_at: datetime | None = None,
    ) -> str:
        """Store the user's one refresh token, in one statement; return the entry id.

        The first call inserts a row. Later calls keep its id, replace the ciphertext,
        expiry and session id, and merge ``metadata`` into the stored metadata in the
        database (shallow, new keys win) with ``updatedAt`` stamped. An access token that
        came with the refresh token (a login) is cached in the same statement; without
        one, the cached access token of the old refresh token is dropped.
        """
        row = self._new_row(
            user_id,
            token,
            TokenType.REFRESH,
            expires_at,
            session_state,
            metadata,
            access_token=access_token,
            access_expires_at=access_expires_at,
        )
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

    async def replace_offline_token(
        self,
        user_id: str,
        client_id: str,
        token: str,
        expires_at: datetime,
        session_state: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[str, str | None]:
        """Store the offline token a login through ``client_id`` obtained, in place of the
        one the user's previous login through that client left (same entry id, metadata
        merged). Returns the entry id and the replaced token, if any and different, so
        the caller can revoke it at the provider."""
        client_id = check_identifier("client_id", client_id)
        previous = await self._backend.fetch_client_offline(
            check_identifier("user_id", user_id), client_id
        )
        # The upsert keeps the previous entry's id: seal for that id.
        row = self._new_row(
            user_id,
            token,
            TokenType.OFFLINE,
            expires_at,
            session_state,
            metadata,
            entry_id=previous.id if previous is not None else None,
        )
        replaced = None
        if previous is not None:
            try:
                replaced = self._sealer.entry(previous).token
            except DecryptionError:
                replaced = None  # unreadable: nothing to revoke, overwrite it
        entry_id = await self._backend.upsert_offline(replace(row, client_id=client_id))
        return entry_id, replaced if replaced != token else None

    def _new_row(
        self,
        user_id: str,
        token: str,
        token_type: TokenType,
        expires_at: datetime,
        session_state: str | None,
        metadata: dict[str, Any] | None,
        *,
        access_token: str | None = None,
        access_expires_at: datetime | None = None,
        entry_id: str | None = None,
    ) -> NewRow:
        user_id = check_identifier("user_id", user_id)
        entry_id = entry_id or str(uuid.uuid4())
        sealed = self._sealer.seal(
            check_token(token), user_id=user_id, token_type=token_type.value, entry_id=entry_id
        )
        token = check_token(token)
        expires = check_expires_at(expires_at)
        if session_state is not None:
            session_state = check_identifier("session_state", session_state)
        metadata_json = check_metadata(metadata)
        access = access_expires = None
        if access_token is not None:
            access_token = check_token(access_token, field="access_token")
            if access_expires_at is None:
                raise ValidationError("access_expires_at", "is required with access_token")
            access_expires = check_expires_at(access_expires_at, field="access_expires_at")
            access = self._sealer.seal_access(
                access_token, user_id=user_id, entry_id=entry_id, version=sealed.version
            )
        return NewRow(
            id=entry_id,
            user_id=user_id,
            token_type=token_type.value,
            sealed=sealed,
            expires_at=expires,
            session_state=session_state,
            metadata_json=metadata_json,
            now=self._clock(),
            access=access,
            access_expires_at=access_expires,
        )

    # -- reads -----------------------------------------------------------------------

    async def retrieve(self, entry_id: str) -> VaultEntry | None:
        """The entry with this id, decrypted, or ``None``."""
        row = await self._backend.fetch(check_identifier("entry_id", entry_id))
        return self._sealer.entry(row) if row is not None else None

    async def get_refresh_token(self, user_id: str) -> VaultEntry | None:
        """The user's refresh-token entry, decrypted, or ``None``."""
        row = await self._backend.fetch_refresh(check_identifier("user_id", user_id))
        return self._sealer.entry(row) if row is not None else None

    async def list_tokens(
        self, user_id: str, token_type: TokenType | str | None = None
    ) -> list[VaultEntry]:
        """The user's entries, oldest first, optionally of one type."""
        kind = check_token_type(token_type).value if token_type is not None else None
        rows = await self._backend.fetch_user(check_identifier("user_id", user_id), kind)
        return [self._sealer.entry(row) for row in rows]

    # -- the refresh flow (driven by token_vault.oidc) ----------------------------------

    async def refresh_state(
        self, user_id: str, *, entry_id: str | None = None
    ) -> RefreshState | None:
        """The state of the entry access tokens come from: ``entry_id`` if given (it must
        be the user's), else the user's refresh entry, else their newest live offline
        entry. ``None`` when the user has no such entry. No refresh token is decrypted."""
        user_id = check_identifier("user_id", user_id)
        if entry_id is not None:
            entry_id = check_identifier("entry_id", entry_id)
        rows, now = await self._backend.fetch_for_refresh(user_id, self._clock())
        row = _source_row(rows, now, entry_id)
        return self._sealer.state(row, now) if row is not None else None

    async def claim_refresh(
        self, state: RefreshState, owner: str, *, lease: timedelta
    ) -> RefreshLease | None:
        """Take the refresh lease of the entry ``state`` describes, for ``lease``.

        ``None`` when another owner holds a live lease, or the entry is gone. The lease
        comes with the entry as it is once taken, so a refresh another process just
        finished is seen. Lease times are kept on the database's clock.
        """
        owner = check_identifier("owner", owner)
        claimed = await self._backend.claim_refresh(state.entry_id, owner, self._clock(), lease)
        if claimed is None:
            return None
        row, now = claimed
        return RefreshLease(
            owner=owner,
            lease=lease,
            entry=self._sealer.entry(row),
            state=self._sealer.state(row, now),
            nonce=row.sealed.nonce,
            version=row.sealed.version,
        )

    async def renew_refresh(self, lease: RefreshLease) -> bool:
        """Extend the lease by its length again; ``False`` if it is no longer ours."""
        return await self._backend.renew_lease(
            lease.entry.id, lease.owner, self._clock(), lease.lease
        )

    async def record_refresh(self, lease: RefreshLease, outcome: RefreshOutcome) -> datetime | None:
        """Store a refresh's outcome and release the lease, in one statement.

        Counts the refresh in the metadata (``refreshCount``, ``lastRefresh``). Returns
        the cached access token's expiry as stored, or ``None`` when the write did not
        apply: the lease is no longer ours, or the entry changed since the lease was
        taken (a login stored a newer token; it wins), or it is gone. Raises
        :class:`ValidationError` for tokens that cannot be stored, before any write.
        """
        entry = lease.entry
        rotated = outcome.refresh_token
        refresh = None
        if rotated is not None and rotated != entry.token:
            refresh = self._sealer.seal(
                check_token(rotated),
                user_id=entry.user_id,
                token_type=entry.token_type.value,
                entry_id=entry.id,
            )
        access = self._sealer.seal_access(
            check_token(outcome.access_token, field="access_token"),
            user_id=entry.user_id,
            entry_id=entry.id,
            version=refresh.version if refresh is not None else lease.version,
        )
        session_state = outcome.session_state
        if session_state is not None:
            session_state = check_identifier("session_state", session_state)
        write = RefreshWrite(
            entry_id=entry.id,
            owner=lease.owner,
            expected_nonce=lease.nonce,
            refresh=refresh,
            refresh_ttl=_lifetime(outcome.refresh_expires_in, "refresh_expires_in"),
            session_state=session_state,
            access=access,
            access_ttl=_lifetime(outcome.access_expires_in, "access_expires_in") or timedelta(0),
            now=self._clock(),
        )
        return await self._backend.record_refresh(write)

    async def mark_needs_reauth(self, lease: RefreshLease) -> bool:
        """The provider killed the grant: flag the entry for a new login, drop its cached
        access token and release the lease. ``False`` when the entry changed meanwhile
        (a new login already replaced the dead token).

        With events on, the ``entry.needs_reauth`` event is written in the same statement.
        """
        if self._events:
            marked = await self._backend.mark_needs_reauth_with_event(
                lease.entry.id, lease.owner, lease.nonce, self._clock(), new_event_id()
            )
            self._told(int(marked))
            return marked
        return await self._backend.mark_needs_reauth(
            lease.entry.id, lease.owner, lease.nonce, self._clock()
        )

    async def release_refresh(self, lease: RefreshLease) -> None:
        """Give the lease back without writing (a no-op once the outcome was recorded)."""
        await self._backend.release_lease(lease.entry.id, lease.owner)

    async def entries_expiring(
        self, within: timedelta, *, limit: int = 1000
    ) -> list[ExpiringEntry]:
        """Live entries whose refresh token lapses within ``within``, soonest first
        (expired ones and those needing a new login are left out)."""
        now = self._clock()
        rows = await self._backend.fetch_expiring(now, now + within, limit)
        return [
            ExpiringEntry(entry_id, user_id, at.astimezone(UTC)) for entry_id, user_id, at in rows
        ]

    async def forget_access_token(self, entry_id: str) -> bool:
        """Drop an entry's cached access token, so the next caller refreshes."""
        return await self._backend.forget_access(check_identifier("entry_id", entry_id))

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

    async def purge_expired(self) -> int:
        """Delete every entry whose ``expires_at`` has passed."""
        return await self.purge_expired_at(self._clock())

    async def purge_expired_at(self, now: datetime) -> int:
        """Delete the entries expired at ``now``; with events on, one ``entry.expired``
        event each, in the same statement (transaction on SQLite)."""
        now = check_expires_at(now)
        if self._events:
            return self._told(await self._backend.purge_expired_with_events(now, self._clock()))
        return await self._backend.purge_expired(now)

    async def backchannel_logout(
        self,
        *,
        session_state: str | None = None,
        user_id: str | None = None,
        token_type: TokenType | str | None = None,
    ) -> int:
        """The provider ended a session (``session_state``) or all of a user's sessions:
        delete those entries (optionally of one type); how many. With events on, one
        ``entry.logged_out`` event per entry, in the same statement."""
        if (session_state is None) == (user_id is None):
            raise ValidationError("session_state", "give exactly one of session_state, user_id")
        kind = check_token_type(token_type).value if token_type is not None else None
        if session_state is not None:
            session_state = check_identifier("session_state", session_state)
            if not self._events:
                return await self._backend.delete_session(session_state, kind)
            return self._told(
                await self._backend.delete_session_with_events(
                    session_state, kind, EventType.LOGGED_OUT.value, self._clock()
                )
            )
        assert user_id is not None
        user_id = check_identifier("user_id", user_id)
        if not self._events:
            return await self._backend.delete_user(user_id, kind)
        return self._told(
            await self._backend.delete_user_with_events(
                user_id, kind, EventType.LOGGED_OUT.value, self._clock()
            )
        )

    # -- events to the app (the outbox) -------------------------------------------------

    @property
    def events_enabled(self) -> bool:
        """Whether changes the app hears of leave events in the outbox."""
        return self._events

    def on_event(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever this vault wrote events (a delivery worker in the same
        process wakes up instead of waiting for its next poll)."""
        self._event_listeners.append(listener)

    def _told(self, written: int) -> int:
        if written:
            for listener in self._event_listeners:
                listener()
        return written

    async def claim_events(
        self, owner: str, *, lease: timedelta, limit: int = 50
    ) -> list[EventRow]:
        """Take up to ``limit`` events that are due, for ``lease``: no other worker sends
        them meanwhile (``FOR UPDATE SKIP LOCKED`` and a lease on PostgreSQL)."""
        owner = check_identifier("owner", owner)
        return await self._backend.claim_events(owner, self._clock(), lease, limit)

    async def record_delivery(self, outcome: DeliveryOutcome) -> bool:
        """Log a delivery attempt and move its event on (delivered, retry later, failed);
        ``False`` when the worker's lease had lapsed (the attempt is logged anyway)."""
        return await self._backend.record_delivery(outcome)

    async def events(
        self, *, state: str | None = None, user_id: str | None = None, limit: int = 100
    ) -> list[EventRow]:
        """Events, newest first, with their delivery state."""
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit", "must be between 1 and 10000")
        if state is not None and state not in ("pending", "delivered", "failed"):
            raise ValidationError("state", "must be pending, delivered or failed")
        if user_id is not None:
            user_id = check_identifier("user_id", user_id)
        return await self._backend.fetch_events(state, user_id, limit)

    async def event(self, event_id: str) -> EventRow | None:
        return await self._backend.fetch_event(check_identifier("event_id", event_id))

    async def deliveries(self, event_ids: list[str]) -> list[DeliveryRow]:
        """The delivery log of these events, oldest attempt first."""
        return await self._backend.fetch_deliveries(
            [check_identifier("event_id", event_id) for event_id in event_ids]
        )

    async def replay_event(self, event_id: str) -> bool:
        """Queue an event again (delivered or failed alike), due now, with a fresh round of
        attempts and the same id; ``False`` if there is no such event."""
        queued = await self._backend.requeue_event(
            check_identifier("event_id", event_id), self._clock()
        )
        self._told(int(queued))
        return queued

    async def purge_events(self, older_than: timedelta) -> int:
        """Delete delivered events (and their logs) older than ``older_than``."""
        return await self._backend.purge_events(self._clock() - older_than)

    # -- the audit trail ---------------------------------------------------------------

    async def record_audit(
        self,
        action: str,
        outcome: str,
        *,
        user_id: str | None = None,
        entry_id: str | None = None,
    ) -> None:
        """Append one audit record, stamped with the request's :data:`audit_context`.

        Raises :class:`UnavailableError` when it cannot be written: a caller that must
        not act unaudited (a token handout) fails with it.
        """
        context = audit_context.get()
        await self._backend.insert_audit(
            AuditRecord(
                at=self._clock(),
                action=check_identifier("action", action),
                outcome=check_identifier("outcome", outcome),
                caller=context.caller,
                user_id=user_id,
                entry_id=entry_id,
                request_id=context.request_id,
                client_address=context.client_address,
            )
        )

    async def audit_trail(
        self,
        *,
        user_id: str | None = None,
        caller: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records, newest first, filtered by whatever is given."""
        if not 1 <= limit <= 10_000:
            raise ValidationError("limit", "must be between 1 and 10000")
        query = AuditQuery(
            user_id=check_identifier("user_id", user_id) if user_id is not None else None,
            caller=check_identifier("caller", caller) if caller is not None else None,
            action=check_identifier("action", action) if action is not None else None,
            since=check_expires_at(since, field="since") if since is not None else None,
            limit=limit,
        )
        return await self._backend.fetch_audit(query)

    async def purge_audit(self, older_than: timedelta) -> int:
        """Delete audit records older than ``older_than`` (retention); how many."""
        return await self._backend.purge_audit(self._clock() - older_than)

    # -- operations ------------------------------------------------------------------

    async def stats(self) -> list[tuple[str, int, int, int]]:
        """Per token type: entries, expired entries, entries needing a new login."""
        return await self._backend.count_entries(self._clock())

    async def schema_status(self) -> SchemaStatus:
        """The schema revision, read through the vault's own connections."""
        return SchemaStatus(await self._backend.schema_revision(), head_revision())

    def batch_counts(self) -> dict[str, BatchCounts]:
        """How concurrent calls were sent together so far, per statement: on PostgreSQL
        the refresh-token upsert and the two hot reads, on SQLite the shared commits."""
        return {
            name: counts.merged(BatchCounts())
            for name, counts in self._backend.batch_counts().items()
        }

    async def keys_in_use(self) -> dict[str, int]:
        """How many ciphertexts (tokens and cached access tokens) each key id seals."""
        return await self._backend.count_by_key()

    async def rotate_keys(
        self,
        *,
        batch_size: int = 500,
        progress: rotation.Progress | None = None,
        max_batches: int | None = None,
    ) -> rotation.RotationReport:
        """Re-seal every row not on the primary key, in batches; resumable."""
        return await rotation.rotate(
            self._backend,
            self._sealer,
            self._clock,
            batch_size=batch_size,
            progress=progress,
            max_batches=max_batches,
        )
