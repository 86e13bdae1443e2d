"""SQLite storage: the embedded default, one connection on one worker thread.

The statements mirror :mod:`token_vault.storage.postgres`. SQLite's ``json_patch`` is a
recursive merge-patch (and its JSON rendering rounds numbers), so the shallow merge
``existing || new || {"updatedAt": ...}`` is a SQL function registered on the
connection, ``vault_merge_metadata``, evaluated inside the same single statement.
Timestamps are stored as fixed-width ISO 8601 UTC text, which sorts correctly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from token_vault.crypto.keyring import Sealed
from token_vault.errors import ConfigurationError, UnavailableError
from token_vault.storage.coalesce import BatchCounts
from token_vault.storage.outbox import (
    DeliveryOutcome,
    DeliveryRow,
    EventRow,
    delivery_row,
    event_row,
    new_event_id,
)
from token_vault.storage.record import (
    AuditQuery,
    AuditRecord,
    NewRow,
    RefreshWrite,
    StoredRow,
    audit_record,
    metadata_stamp,
    stored_row,
)
from token_vault.storage.schema import COLUMNS, EVENT_COLUMNS
from token_vault.storage.url import DatabaseURL
from token_vault.storage.worker import SQLiteWorker

__all__ = ["UPSERT_REFRESH_TOKEN", "SQLiteBackend", "connect_sqlite"]

T = TypeVar("T")

UPSERT_REFRESH_TOKEN = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             access_ciphertext, access_nonce, access_key_id, access_expires_at)
VALUES (?1, ?2, 'refresh', ?3, ?4, ?5, ?6, ?7, vault_merge_metadata(NULL, ?8, ?10), ?9, ?9,
        ?11, ?12, ?13, ?14)
ON CONFLICT (user_id, token_type) WHERE token_type = 'refresh'
DO UPDATE SET ciphertext = excluded.ciphertext,
              nonce = excluded.nonce,
              key_id = excluded.key_id,
              expires_at = excluded.expires_at,
              session_state = excluded.session_state,
              metadata = vault_merge_metadata(v.metadata, ?8, ?10),
              updated_at = excluded.updated_at,
              needs_reauth = 0,
              access_ciphertext = excluded.access_ciphertext,
              access_nonce = excluded.access_nonce,
              access_key_id = excluded.access_key_id,
              access_expires_at = excluded.access_expires_at
RETURNING id
"""

INSERT_TOKEN = """
INSERT INTO auth_vault (id, user_id, token_type, ciphertext, nonce, key_id,
                        expires_at, session_state, metadata, created_at, updated_at,
                        seal_version)
VALUES (?1, ?2, ?11, ?3, ?4, ?5, ?6, ?7, vault_merge_metadata(NULL, ?8, ?10), ?9, ?9, ?12)
RETURNING id
"""

UPSERT_OFFLINE_TOKEN = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             client_id, seal_version)
VALUES (?1, ?2, 'offline', ?3, ?4, ?5, ?6, ?7, vault_merge_metadata(NULL, ?8, ?10), ?9, ?9, ?11,
        ?12)
ON CONFLICT (user_id, client_id) WHERE token_type = 'offline' AND client_id IS NOT NULL
DO UPDATE SET ciphertext = excluded.ciphertext,
              seal_version = excluded.seal_version,
              nonce = excluded.nonce,
              key_id = excluded.key_id,
              expires_at = excluded.expires_at,
              session_state = excluded.session_state,
              metadata = vault_merge_metadata(v.metadata, ?8, ?10),
              updated_at = excluded.updated_at,
              needs_reauth = 0,
              access_ciphertext = NULL,
              access_nonce = NULL,
              access_key_id = NULL,
              access_expires_at = NULL
RETURNING id
"""

SELECT_CLIENT_OFFLINE = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = ?1 AND client_id = ?2 "
    "AND token_type = 'offline'"
)

SELECT_EXPIRING = """
SELECT id, user_id, expires_at FROM auth_vault
WHERE expires_at > ?1 AND expires_at <= ?2 AND NOT needs_reauth
ORDER BY expires_at
LIMIT ?3
"""

INSERT_AUDIT = """
INSERT INTO auth_vault_audit (at, action, outcome, caller, user_id, entry_id, request_id,
                              client_address)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
"""

SELECT_AUDIT = """
SELECT id, at, action, outcome, caller, user_id, entry_id, request_id, client_address
FROM auth_vault_audit
WHERE (?1 IS NULL OR user_id = ?1)
  AND (?2 IS NULL OR caller = ?2)
  AND (?3 IS NULL OR action = ?3)
  AND (?4 IS NULL OR at >= ?4)
ORDER BY at DESC, id DESC
LIMIT ?5
"""

PURGE_AUDIT = "DELETE FROM auth_vault_audit WHERE at < ?1"

SELECT_BY_ID = f"SELECT {COLUMNS} FROM auth_vault WHERE id = ?1"
SELECT_REFRESH_TOKEN = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = ?1 AND token_type = 'refresh'"
)
SELECT_USER_TOKENS = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = ?1 "
    "AND (?2 IS NULL OR token_type = ?2) ORDER BY created_at, id"
)
DELETE_BY_ID = "DELETE FROM auth_vault WHERE id = ?1"
DELETE_USER = "DELETE FROM auth_vault WHERE user_id = ?1 AND (?2 IS NULL OR token_type = ?2)"
DELETE_SESSION = (
    "DELETE FROM auth_vault WHERE session_state = ?1 AND (?2 IS NULL OR token_type = ?2)"
)
PURGE_EXPIRED = "DELETE FROM auth_vault WHERE expires_at <= ?1"

# One machine, one clock: SQLite's lease and access-token times come from the vault's
# clock, passed in as ?3/?4.
CLAIM_REFRESH_LEASE = f"""
UPDATE auth_vault SET lease_owner = ?2, lease_expires_at = ?4
WHERE id = ?1 AND (lease_expires_at IS NULL OR lease_expires_at <= ?3)
RETURNING {COLUMNS}
"""

RENEW_REFRESH_LEASE = """
UPDATE auth_vault SET lease_expires_at = ?3 WHERE id = ?1 AND lease_owner = ?2
RETURNING id
"""

RECORD_REFRESH = """
UPDATE auth_vault
SET ciphertext = COALESCE(?3, ciphertext),
    seal_version = COALESCE(?15, seal_version),
    nonce = COALESCE(?4, nonce),
    key_id = COALESCE(?5, key_id),
    expires_at = COALESCE(?6, expires_at),
    session_state = COALESCE(?7, session_state),
    access_ciphertext = ?8, access_nonce = ?9, access_key_id = ?10, access_expires_at = ?11,
    metadata = vault_count_refresh(metadata, ?13),
    updated_at = ?12,
    needs_reauth = 0,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = ?1 AND nonce = ?14 AND lease_owner = ?2
RETURNING access_expires_at
"""

FORGET_ACCESS_TOKEN = """
UPDATE auth_vault
SET access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
    access_expires_at = NULL
WHERE id = ?1
"""

SCHEMA_REVISION = "SELECT version_num FROM alembic_version"

RELEASE_LEASE = (
    "UPDATE auth_vault SET lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = ?1 AND lease_owner = ?2"
)

MARK_NEEDS_REAUTH = """
UPDATE auth_vault
SET needs_reauth = 1,
    access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
    access_expires_at = NULL, updated_at = ?4,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND nonce = ?3 AND lease_owner = ?2
RETURNING id
"""

SELECT_ON_OTHER_KEYS = f"""
SELECT {COLUMNS} FROM auth_vault
WHERE (key_id <> ?1 OR access_key_id <> ?1 OR (token_type = 'offline' AND seal_version < 2))
  AND (lease_expires_at IS NULL OR lease_expires_at <= ?3)
ORDER BY id
LIMIT ?2
"""

RESEAL = """
UPDATE auth_vault
SET ciphertext = ?3, nonce = ?4, key_id = ?5,
    access_ciphertext = ?6, access_nonce = ?7, access_key_id = ?8, seal_version = ?10
WHERE id = ?1 AND nonce = ?2
  AND (lease_expires_at IS NULL OR lease_expires_at <= ?9)
RETURNING id
"""

COUNT_BY_KEY = """
SELECT key_id, COUNT(*) FROM (
  SELECT key_id FROM auth_vault
  UNION ALL
  SELECT access_key_id FROM auth_vault WHERE access_key_id IS NOT NULL
) AS used
GROUP BY key_id
"""

COUNT_ENTRIES = """
SELECT token_type,
       COUNT(*) AS entries,
       SUM(CASE WHEN expires_at <= ?1 THEN 1 ELSE 0 END) AS expired,
       SUM(CASE WHEN needs_reauth THEN 1 ELSE 0 END) AS needs_reauth
FROM auth_vault
GROUP BY token_type
ORDER BY token_type
"""

REMEMBER_LOGOUT_TOKEN = """
INSERT INTO auth_vault_seen_logout_token (jti, expires_at) VALUES (?1, ?2)
ON CONFLICT (jti) DO NOTHING
RETURNING jti
"""
FORGET_OLD_LOGOUT_TOKENS = "DELETE FROM auth_vault_seen_logout_token WHERE expires_at < ?1"

# -- the outbox: events for the app, written in the transaction of the change ----------
# SQLite runs no data-modifying CTE, so each change and its events are two statements in
# one transaction (one connection, one process).

INSERT_EVENT = """
INSERT INTO auth_vault_event (id, type, user_id, entry_id, token_type, occurred_at,
                              next_attempt_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
"""

MARK_NEEDS_REAUTH_FOR_EVENT = """
UPDATE auth_vault
SET needs_reauth = 1,
    access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
    access_expires_at = NULL, updated_at = ?4,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1 AND nonce = ?3 AND lease_owner = ?2
RETURNING id, user_id, token_type
"""

DELETE_SESSION_FOR_EVENTS = (
    "DELETE FROM auth_vault WHERE session_state = ?1 AND (?2 IS NULL OR token_type = ?2) "
    "RETURNING id, user_id, token_type"
)
DELETE_USER_FOR_EVENTS = (
    "DELETE FROM auth_vault WHERE user_id = ?1 AND (?2 IS NULL OR token_type = ?2) "
    "RETURNING id, user_id, token_type"
)
PURGE_EXPIRED_FOR_EVENTS = (
    "DELETE FROM auth_vault WHERE expires_at <= ?1 RETURNING id, user_id, token_type"
)

CLAIM_EVENTS = f"""
UPDATE auth_vault_event SET lease_owner = ?1, lease_expires_at = ?3
WHERE id IN (
  SELECT id FROM auth_vault_event
  WHERE state = 'pending' AND next_attempt_at <= ?2
    AND (lease_expires_at IS NULL OR lease_expires_at <= ?2)
  ORDER BY next_attempt_at, occurred_at
  LIMIT ?4
)
RETURNING {EVENT_COLUMNS}
"""

UPDATE_DELIVERED_EVENT = """
UPDATE auth_vault_event
SET attempts = attempts + 1,
    state = ?3,
    next_attempt_at = ?4,
    delivered_at = CASE WHEN ?3 = 'delivered' THEN ?5 ELSE delivered_at END,
    last_status = ?6,
    last_error = ?7,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = ?1 AND lease_owner = ?2
"""

INSERT_DELIVERY = """
INSERT INTO auth_vault_event_delivery (event_id, attempt, at, status, error, duration_ms, worker)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
"""

SELECT_EVENTS = f"""
SELECT {EVENT_COLUMNS} FROM auth_vault_event
WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR user_id = ?2)
ORDER BY occurred_at DESC, id DESC
LIMIT ?3
"""

SELECT_EVENT = f"SELECT {EVENT_COLUMNS} FROM auth_vault_event WHERE id = ?1"

SELECT_DELIVERIES = """
SELECT event_id, attempt, at, status, error, duration_ms, worker
FROM auth_vault_event_delivery WHERE event_id IN (SELECT value FROM json_each(?1))
ORDER BY id
"""

REQUEUE_EVENT = """
UPDATE auth_vault_event
SET state = 'pending', attempts = 0, next_attempt_at = ?2,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = ?1
RETURNING id
"""

PURGE_DELIVERED_EVENTS = (
    "DELETE FROM auth_vault_event WHERE state = 'delivered' AND occurred_at < ?1"
)


def _in_transaction(connection: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` (statements on ``connection``) as one transaction. Inside the worker's
    group commit the call already has its own savepoint: that makes it atomic."""
    if connection.in_transaction:
        return work()
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result


def _with_events(
    connection: sqlite3.Connection,
    change: str,
    params: tuple[Any, ...],
    event_type: str,
    now: datetime,
    event_id: str | None = None,
) -> int:
    """Run ``change`` (returning ``id, user_id, token_type`` per changed entry) and write
    one event per entry, in one transaction; how many entries changed."""

    def work() -> int:
        changed = connection.execute(change, params).fetchall()
        for entry_id, user_id, token_type in changed:
            connection.execute(
                INSERT_EVENT,
                (
                    event_id or new_event_id(),
                    event_type,
                    user_id,
                    entry_id,
                    token_type,
                    to_text(now),
                ),
            )
        return len(changed)

    return _in_transaction(connection, work)


def _event(record: tuple[Any, ...]) -> EventRow:
    return event_row(record, datetime.fromisoformat)


_SCHEMA_SIGNS = ("no such table", "no such column", "has no column named", "ON CONFLICT clause")
_SCHEMA_BEHIND = (
    "the database schema is missing or not at the newest revision; run `token-vault db upgrade`"
)


def to_text(moment: datetime) -> str:
    """Fixed-width ISO 8601 in UTC, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def merge_metadata(existing: str | None, new: str | None, stamp: str) -> str:
    """Shallow merge ``existing || new || {"updatedAt": stamp}``: new keys win."""
    merged: dict[str, Any] = json.loads(existing) if existing else {}
    if new:
        merged.update(json.loads(new))
    merged["updatedAt"] = stamp
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":"))


def count_refresh(existing: str | None, stamp: str) -> str:
    """``refreshCount + 1`` and ``lastRefresh``/``updatedAt`` stamped, in the metadata."""
    merged: dict[str, Any] = json.loads(existing) if existing else {}
    count = merged.get("refreshCount")
    base = count if isinstance(count, int | float) and not isinstance(count, bool) else 0
    merged["refreshCount"] = base + 1
    merged["lastRefresh"] = stamp
    merged["updatedAt"] = stamp
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":"))


def connect_sqlite(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open the vault's SQLite file with the settings every connection uses; the file
    (and its WAL and shared-memory files) is readable by its owner only."""
    if not Path(path).exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=30.0
    )
    connection.execute("PRAGMA journal_mode=WAL")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(path + suffix).chmod(0o600)
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.create_function("vault_merge_metadata", 3, merge_metadata, deterministic=True)
    connection.create_function("vault_count_refresh", 2, count_refresh, deterministic=True)
    return connection


def _params(row: NewRow) -> tuple[Any, ...]:
    """Parameters ?1-?10 shared by the upsert and the insert (the insert adds ?11)."""
    return (
        row.id,
        row.user_id,
        row.sealed.ciphertext,
        row.sealed.nonce,
        row.sealed.key_id,
        to_text(row.expires_at),
        row.session_state,
        row.metadata_json,
        to_text(row.now),
        metadata_stamp(row.now),
    )


def _access_params(row: NewRow) -> tuple[Any, ...]:
    """Parameters ?11-?14 of the upsert: the access token that came with the refresh token."""
    access, expires_at = row.access, row.access_expires_at
    if access is None or expires_at is None:
        return (None, None, None, None)
    return (access.ciphertext, access.nonce, access.key_id, to_text(expires_at))


def _row(record: tuple[Any, ...]) -> StoredRow:
    return stored_row(record, datetime.fromisoformat)


class SQLiteBackend:
    """Runs each call on the connection's own thread; concurrent writes share a commit
    (see :mod:`token_vault.storage.worker`)."""

    dialect = "sqlite"

    def __init__(self, worker: SQLiteWorker) -> None:
        self._worker = worker

    @classmethod
    async def connect(cls, url: DatabaseURL) -> SQLiteBackend:
        path = url.sqlite_path
        if not Path(path).parent.exists():
            raise ConfigurationError(f"directory of the SQLite file {path!r} does not exist")
        worker = SQLiteWorker(lambda: connect_sqlite(path, check_same_thread=False))
        try:
            await worker.start()
        except sqlite3.Error as exc:
            raise UnavailableError(f"cannot open SQLite file: {exc}") from None
        return cls(worker)

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        def call(connection: sqlite3.Connection) -> T:
            try:
                return work(connection)
            except sqlite3.OperationalError as exc:
                message = str(exc)
                if any(sign in message for sign in _SCHEMA_SIGNS):
                    raise ConfigurationError(_SCHEMA_BEHIND) from None
                raise UnavailableError(f"database unavailable: {message}") from None

        return await self._worker.run(call, write=write)

    async def upsert_refresh(self, row: NewRow) -> str:
        params = (*_params(row), *_access_params(row))
        return await self._run(
            lambda c: str(c.execute(UPSERT_REFRESH_TOKEN, params).fetchall()[0][0])
        )

    async def insert(self, row: NewRow) -> str:
        params = (*_params(row), row.token_type, row.sealed.version)
        return await self._run(lambda c: str(c.execute(INSERT_TOKEN, params).fetchall()[0][0]))

    async def upsert_offline(self, row: NewRow) -> str:
        params = (*_params(row), row.client_id, row.sealed.version)
        return await self._run(
            lambda c: str(c.execute(UPSERT_OFFLINE_TOKEN, params).fetchall()[0][0])
        )

    async def fetch_client_offline(self, user_id: str, client_id: str) -> StoredRow | None:
        params = (user_id, client_id)
        record = await self._run(
            lambda c: c.execute(SELECT_CLIENT_OFFLINE, params).fetchone(), write=False
        )
        return _row(record) if record is not None else None

    async def fetch_expiring(
        self, now: datetime, until: datetime, limit: int
    ) -> list[tuple[str, str, datetime]]:
        params = (to_text(now), to_text(until), limit)
        rows = await self._run(lambda c: c.execute(SELECT_EXPIRING, params).fetchall(), write=False)
        return [(str(r[0]), str(r[1]), datetime.fromisoformat(r[2])) for r in rows]

    async def insert_audit(self, record: AuditRecord) -> None:
        params = (
            to_text(record.at),
            record.action,
            record.outcome,
            record.caller,
            record.user_id,
            record.entry_id,
            record.request_id,
            record.client_address,
        )
        await self._run(lambda c: c.execute(INSERT_AUDIT, params))

    async def fetch_audit(self, query: AuditQuery) -> list[AuditRecord]:
        since = to_text(query.since) if query.since is not None else None
        params = (query.user_id, query.caller, query.action, since, query.limit)
        rows = await self._run(lambda c: c.execute(SELECT_AUDIT, params).fetchall())
        return [audit_record(r, datetime.fromisoformat) for r in rows]

    async def purge_audit(self, before: datetime) -> int:
        return await self._run(lambda c: c.execute(PURGE_AUDIT, (to_text(before),)).rowcount)

    async def fetch(self, entry_id: str) -> StoredRow | None:
        record = await self._run(
            lambda c: c.execute(SELECT_BY_ID, (entry_id,)).fetchone(), write=False
        )
        return _row(record) if record is not None else None

    async def fetch_refresh(self, user_id: str) -> StoredRow | None:
        record = await self._run(
            lambda c: c.execute(SELECT_REFRESH_TOKEN, (user_id,)).fetchone(), write=False
        )
        return _row(record) if record is not None else None

    async def fetch_user(self, user_id: str, token_type: str | None) -> list[StoredRow]:
        records = await self._run(
            lambda c: c.execute(SELECT_USER_TOKENS, (user_id, token_type)).fetchall(), write=False
        )
        return [_row(r) for r in records]

    async def delete(self, entry_id: str) -> bool:
        return await self._run(lambda c: c.execute(DELETE_BY_ID, (entry_id,)).rowcount) > 0

    async def delete_user(self, user_id: str, token_type: str | None) -> int:
        return await self._run(lambda c: c.execute(DELETE_USER, (user_id, token_type)).rowcount)

    async def delete_session(self, session_state: str, token_type: str | None) -> int:
        return await self._run(
            lambda c: c.execute(DELETE_SESSION, (session_state, token_type)).rowcount
        )

    async def purge_expired(self, now: datetime) -> int:
        return await self._run(lambda c: c.execute(PURGE_EXPIRED, (to_text(now),)).rowcount)

    async def fetch_for_refresh(
        self, user_id: str, now: datetime
    ) -> tuple[list[StoredRow], datetime]:
        return await self.fetch_user(user_id, None), now

    async def claim_refresh(
        self, entry_id: str, owner: str, now: datetime, lease: timedelta
    ) -> tuple[StoredRow, datetime] | None:
        params = (entry_id, owner, to_text(now), to_text(now + lease))
        records = await self._run(lambda c: c.execute(CLAIM_REFRESH_LEASE, params).fetchall())
        return (_row(records[0]), now) if records else None

    async def renew_lease(self, entry_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        params = (entry_id, owner, to_text(now + lease))
        return bool(await self._run(lambda c: c.execute(RENEW_REFRESH_LEASE, params).fetchall()))

    async def record_refresh(self, write: RefreshWrite) -> datetime | None:
        refresh = write.refresh
        ttl = write.refresh_ttl
        params = (
            write.entry_id,
            write.owner,
            refresh.ciphertext if refresh else None,
            refresh.nonce if refresh else None,
            refresh.key_id if refresh else None,
            to_text(write.now + ttl) if ttl is not None else None,
            write.session_state,
            write.access.ciphertext,
            write.access.nonce,
            write.access.key_id,
            to_text(write.now + write.access_ttl),
            to_text(write.now),
            metadata_stamp(write.now),
            write.expected_nonce,
            refresh.version if refresh else None,
        )
        rows = await self._run(lambda c: c.execute(RECORD_REFRESH, params).fetchall())
        return datetime.fromisoformat(rows[0][0]) if rows else None

    async def forget_access(self, entry_id: str) -> bool:
        return await self._run(lambda c: c.execute(FORGET_ACCESS_TOKEN, (entry_id,)).rowcount) > 0

    async def release_lease(self, entry_id: str, owner: str) -> None:
        await self._run(lambda c: c.execute(RELEASE_LEASE, (entry_id, owner)))

    async def mark_needs_reauth(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime
    ) -> bool:
        params = (entry_id, owner, expected_nonce, to_text(now))
        return bool(await self._run(lambda c: c.execute(MARK_NEEDS_REAUTH, params).fetchall()))

    async def remember_logout_token(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        def work(c: sqlite3.Connection) -> bool:
            c.execute(FORGET_OLD_LOGOUT_TOKENS, (to_text(now),))
            return bool(c.execute(REMEMBER_LOGOUT_TOKEN, (jti, to_text(expires_at))).fetchall())

        return await self._run(work)

    async def rows_on_other_keys(self, primary: str, limit: int, now: datetime) -> list[StoredRow]:
        rows = await self._run(
            lambda c: c.execute(SELECT_ON_OTHER_KEYS, (primary, limit, to_text(now))).fetchall(),
            write=False,
        )
        return [_row(r) for r in rows]

    async def reseal(
        self,
        entry_id: str,
        expected_nonce: bytes,
        refresh: Sealed,
        access: Sealed | None,
        now: datetime,
    ) -> bool:
        params = (
            entry_id,
            expected_nonce,
            refresh.ciphertext,
            refresh.nonce,
            refresh.key_id,
            access.ciphertext if access else None,
            access.nonce if access else None,
            access.key_id if access else None,
            to_text(now),
            refresh.version,
        )
        return bool(await self._run(lambda c: c.execute(RESEAL, params).fetchall()))

    async def count_by_key(self) -> dict[str, int]:
        rows = await self._run(lambda c: c.execute(COUNT_BY_KEY).fetchall(), write=False)
        return {str(r[0]): int(r[1]) for r in rows}

    async def count_entries(self, now: datetime) -> list[tuple[str, int, int, int]]:
        rows = await self._run(
            lambda c: c.execute(COUNT_ENTRIES, (to_text(now),)).fetchall(), write=False
        )
        return [(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]

    # -- the outbox --------------------------------------------------------------------

    async def mark_needs_reauth_with_event(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime, event_id: str
    ) -> bool:
        params = (entry_id, owner, expected_nonce, to_text(now))
        return bool(
            await self._run(
                lambda c: _with_events(
                    c, MARK_NEEDS_REAUTH_FOR_EVENT, params, "entry.needs_reauth", now, event_id
                )
            )
        )

    async def delete_session_with_events(
        self, session_state: str, token_type: str | None, event_type: str, now: datetime
    ) -> int:
        params = (session_state, token_type)
        return await self._run(
            lambda c: _with_events(c, DELETE_SESSION_FOR_EVENTS, params, event_type, now)
        )

    async def delete_user_with_events(
        self, user_id: str, token_type: str | None, event_type: str, now: datetime
    ) -> int:
        params = (user_id, token_type)
        return await self._run(
            lambda c: _with_events(c, DELETE_USER_FOR_EVENTS, params, event_type, now)
        )

    async def purge_expired_with_events(self, cutoff: datetime, now: datetime) -> int:
        params = (to_text(cutoff),)
        return await self._run(
            lambda c: _with_events(c, PURGE_EXPIRED_FOR_EVENTS, params, "entry.expired", now)
        )

    async def claim_events(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[EventRow]:
        params = (owner, to_text(now), to_text(now + lease), limit)
        rows = await self._run(lambda c: c.execute(CLAIM_EVENTS, params).fetchall())
        return sorted((_event(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))

    async def record_delivery(self, outcome: DeliveryOutcome) -> bool:
        now = to_text(outcome.at)
        update = (
            outcome.event_id,
            outcome.worker,
            outcome.state,
            to_text(outcome.at + outcome.retry_in),
            now,
            outcome.status,
            outcome.error,
        )
        log = (
            outcome.event_id,
            outcome.attempt,
            now,
            outcome.status,
            outcome.error,
            outcome.duration_ms,
            outcome.worker,
        )

        def work(c: sqlite3.Connection) -> bool:
            def both() -> bool:
                applied = c.execute(UPDATE_DELIVERED_EVENT, update).rowcount > 0
                c.execute(INSERT_DELIVERY, log)
                return applied

            return _in_transaction(c, both)

        return await self._run(work)

    async def fetch_events(
        self, state: str | None, user_id: str | None, limit: int
    ) -> list[EventRow]:
        params = (state, user_id, limit)
        rows = await self._run(lambda c: c.execute(SELECT_EVENTS, params).fetchall())
        return [_event(r) for r in rows]

    async def fetch_event(self, event_id: str) -> EventRow | None:
        row = await self._run(lambda c: c.execute(SELECT_EVENT, (event_id,)).fetchone())
        return _event(row) if row is not None else None

    async def fetch_deliveries(self, event_ids: list[str]) -> list[DeliveryRow]:
        params = (json.dumps(event_ids),)
        rows = await self._run(lambda c: c.execute(SELECT_DELIVERIES, params).fetchall())
        return [delivery_row(r, datetime.fromisoformat) for r in rows]

    async def requeue_event(self, event_id: str, now: datetime) -> bool:
        params = (event_id, to_text(now))
        return bool(await self._run(lambda c: c.execute(REQUEUE_EVENT, params).fetchall()))

    async def purge_events(self, before: datetime) -> int:
        params = (to_text(before),)
        return await self._run(lambda c: c.execute(PURGE_DELIVERED_EVENTS, params).rowcount)

    async def schema_revision(self) -> str | None:
        def read(c: sqlite3.Connection) -> str | None:
            try:
                found = c.execute(SCHEMA_REVISION).fetchone()
            except sqlite3.OperationalError:  # no such table: never migrated
                return None
            return str(found[0]) if found else None

        return await self._run(read, write=False)

    def batch_counts(self) -> dict[str, BatchCounts]:
        return {"transaction": self._worker.counts}

    async def close(self) -> None:
        await self._worker.close()
