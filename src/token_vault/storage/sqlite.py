"""SQLite storage: the embedded default, one connection on one worker thread.

The statements mirror :mod:`token_vault.storage.postgres`. SQLite's ``json_patch`` is a
recursive merge-patch (and its JSON rendering rounds numbers), so the shallow merge
``existing || new || {"updatedAt": ...}`` is a SQL function registered on the
connection, ``vault_merge_metadata``, evaluated inside the same single statement.
Timestamps are stored as fixed-width ISO 8601 UTC text, which sorts correctly.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from token_vault.crypto.keyring import Sealed
from token_vault.errors import ConfigurationError, UnavailableError
from token_vault.storage.coalesce import BatchCounts
from token_vault.storage.record import (
    NewRow,
    RefreshWrite,
    StoredRow,
    metadata_stamp,
    stored_row,
)
from token_vault.storage.schema import COLUMNS
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
                        expires_at, session_state, metadata, created_at, updated_at)
VALUES (?1, ?2, ?11, ?3, ?4, ?5, ?6, ?7, vault_merge_metadata(NULL, ?8, ?10), ?9, ?9)
RETURNING id
"""

UPSERT_OFFLINE_TOKEN = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             client_id)
VALUES (?1, ?2, 'offline', ?3, ?4, ?5, ?6, ?7, vault_merge_metadata(NULL, ?8, ?10), ?9, ?9, ?11)
ON CONFLICT (user_id, client_id) WHERE token_type = 'offline' AND client_id IS NOT NULL
DO UPDATE SET ciphertext = excluded.ciphertext,
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
WHERE (key_id <> ?1 OR access_key_id <> ?1)
  AND (lease_expires_at IS NULL OR lease_expires_at <= ?3)
ORDER BY id
LIMIT ?2
"""

RESEAL = """
UPDATE auth_vault
SET ciphertext = ?3, nonce = ?4, key_id = ?5,
    access_ciphertext = ?6, access_nonce = ?7, access_key_id = ?8
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
    """Open the vault's SQLite file with the settings every connection uses."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=30.0
    )
    connection.execute("PRAGMA journal_mode=WAL")
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
        params = (*_params(row), row.token_type)
        return await self._run(lambda c: str(c.execute(INSERT_TOKEN, params).fetchall()[0][0]))

    async def upsert_offline(self, row: NewRow) -> str:
        params = (*_params(row), row.client_id)
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
