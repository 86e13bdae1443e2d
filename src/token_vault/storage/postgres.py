"""PostgreSQL storage on asyncpg: prepared statements, one round trip per call.

The statements below are the whole of what the vault runs on PostgreSQL. The upsert
restates the partial index's predicate as a literal in the conflict target, which is
how PostgreSQL finds ``auth_vault_user_id_token_type_unique_idx``.

The three hot calls (the refresh-token upsert, the read of a user's refresh entry, the
read behind a cached access token) go through a :class:`~token_vault.storage.coalesce.
Coalescer`: alone, as the plain statement, while few are in flight; what queues
meanwhile goes as one batch statement (``unnest`` / ``= ANY``) doing the same for each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg

from token_vault.crypto.keyring import Sealed
from token_vault.errors import ConfigurationError, UnavailableError
from token_vault.storage.coalesce import DEFAULT_MAX_BATCH, BatchCounts, Coalescer
from token_vault.storage.connections import ConnectionPool
from token_vault.storage.outbox import (
    DeliveryOutcome,
    DeliveryRow,
    EventRow,
    delivery_row,
    event_row,
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
from token_vault.storage.schema import COLUMNS, EVENT_COLUMNS, column_position
from token_vault.storage.url import DatabaseURL

__all__ = ["UPSERT_REFRESH_TOKEN", "UPSERT_REFRESH_TOKENS", "PostgresBackend"]

T = TypeVar("T")

# $8: metadata as JSON text (or NULL); $9: now; $10: now as the metadata's updatedAt;
# $11-$14: the access token that came with the refresh token, sealed (or NULLs).
UPSERT_REFRESH_TOKEN = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             access_ciphertext, access_nonce, access_key_id, access_expires_at)
VALUES ($1, $2, 'refresh', $3, $4, $5, $6, $7,
        COALESCE($8::jsonb, '{}'::jsonb) || jsonb_build_object('updatedAt', $10::text),
        $9, $9, $11, $12, $13, $14)
ON CONFLICT (user_id, token_type) WHERE token_type = 'refresh'
DO UPDATE SET ciphertext = EXCLUDED.ciphertext,
              nonce = EXCLUDED.nonce,
              key_id = EXCLUDED.key_id,
              expires_at = EXCLUDED.expires_at,
              session_state = EXCLUDED.session_state,
              metadata = COALESCE(v.metadata, '{}'::jsonb)
                         || COALESCE($8::jsonb, '{}'::jsonb)
                         || jsonb_build_object('updatedAt', $10::text),
              updated_at = EXCLUDED.updated_at,
              needs_reauth = false,
              access_ciphertext = EXCLUDED.access_ciphertext,
              access_nonce = EXCLUDED.access_nonce,
              access_key_id = EXCLUDED.access_key_id,
              access_expires_at = EXCLUDED.access_expires_at
RETURNING id
"""

# The same upsert for a batch of calls, one array per parameter of the statement above
# ($1-$14 in the same order), one row per call. A batch never holds two calls for one
# user (the second waits for the next batch), so no row is affected twice; rows come
# sorted by user id, so two batches lock rows in the same order and never deadlock.
# The metadata of the insert branch already carries updatedAt, so the update branch
# merges it as ``stored || $8 || {"updatedAt": $10}``, as above.
UPSERT_REFRESH_TOKENS = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             access_ciphertext, access_nonce, access_key_id, access_expires_at)
SELECT b.id, b.user_id, 'refresh', b.ciphertext, b.nonce, b.key_id, b.expires_at,
       b.session_state,
       COALESCE(b.metadata::jsonb, '{}'::jsonb) || jsonb_build_object('updatedAt', b.stamp),
       b.now, b.now, b.access_ciphertext, b.access_nonce, b.access_key_id,
       b.access_expires_at
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::text[],
            $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[], $10::text[],
            $11::bytea[], $12::bytea[], $13::text[], $14::timestamptz[])
     AS b(id, user_id, ciphertext, nonce, key_id, expires_at, session_state, metadata, now,
          stamp, access_ciphertext, access_nonce, access_key_id, access_expires_at)
ON CONFLICT (user_id, token_type) WHERE token_type = 'refresh'
DO UPDATE SET ciphertext = EXCLUDED.ciphertext,
              nonce = EXCLUDED.nonce,
              key_id = EXCLUDED.key_id,
              expires_at = EXCLUDED.expires_at,
              session_state = EXCLUDED.session_state,
              metadata = COALESCE(v.metadata, '{}'::jsonb) || EXCLUDED.metadata,
              updated_at = EXCLUDED.updated_at,
              needs_reauth = false,
              access_ciphertext = EXCLUDED.access_ciphertext,
              access_nonce = EXCLUDED.access_nonce,
              access_key_id = EXCLUDED.access_key_id,
              access_expires_at = EXCLUDED.access_expires_at
RETURNING user_id, id
"""

INSERT_TOKEN = """
INSERT INTO auth_vault (id, user_id, token_type, ciphertext, nonce, key_id,
                        expires_at, session_state, metadata, created_at, updated_at,
                        seal_version)
VALUES ($1, $2, $11, $3, $4, $5, $6, $7,
        COALESCE($8::jsonb, '{}'::jsonb) || jsonb_build_object('updatedAt', $10::text),
        $9, $9, $12)
RETURNING id
"""

# A login with offline access: one offline entry per user and client, replaced in place
# (same id, metadata merged), like the refresh upsert. $11: the client id.
UPSERT_OFFLINE_TOKEN = """
INSERT INTO auth_vault AS v (id, user_id, token_type, ciphertext, nonce, key_id,
                             expires_at, session_state, metadata, created_at, updated_at,
                             client_id, seal_version)
VALUES ($1, $2, 'offline', $3, $4, $5, $6, $7,
        COALESCE($8::jsonb, '{}'::jsonb) || jsonb_build_object('updatedAt', $10::text),
        $9, $9, $11, $12)
ON CONFLICT (user_id, client_id) WHERE token_type = 'offline' AND client_id IS NOT NULL
DO UPDATE SET ciphertext = EXCLUDED.ciphertext,
              seal_version = EXCLUDED.seal_version,
              nonce = EXCLUDED.nonce,
              key_id = EXCLUDED.key_id,
              expires_at = EXCLUDED.expires_at,
              session_state = EXCLUDED.session_state,
              metadata = COALESCE(v.metadata, '{}'::jsonb)
                         || COALESCE($8::jsonb, '{}'::jsonb)
                         || jsonb_build_object('updatedAt', $10::text),
              updated_at = EXCLUDED.updated_at,
              needs_reauth = false,
              access_ciphertext = NULL,
              access_nonce = NULL,
              access_key_id = NULL,
              access_expires_at = NULL
RETURNING id
"""

SELECT_CLIENT_OFFLINE = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = $1 AND client_id = $2 "
    "AND token_type = 'offline'"
)

# Keep-alive: live entries whose refresh token lapses before $2, soonest first.
SELECT_EXPIRING = """
SELECT id, user_id, expires_at FROM auth_vault
WHERE expires_at > $1 AND expires_at <= $2 AND NOT needs_reauth
ORDER BY expires_at
LIMIT $3
"""

INSERT_AUDIT = """
INSERT INTO auth_vault_audit (at, action, outcome, caller, user_id, entry_id, request_id,
                              client_address)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""

# Newest first; each filter applies only when given.
SELECT_AUDIT = """
SELECT id, at, action, outcome, caller, user_id, entry_id, request_id, client_address
FROM auth_vault_audit
WHERE ($1::text IS NULL OR user_id = $1)
  AND ($2::text IS NULL OR caller = $2)
  AND ($3::text IS NULL OR action = $3)
  AND ($4::timestamptz IS NULL OR at >= $4)
ORDER BY at DESC, id DESC
LIMIT $5
"""

PURGE_AUDIT = "DELETE FROM auth_vault_audit WHERE at < $1"

SELECT_BY_ID = f"SELECT {COLUMNS} FROM auth_vault WHERE id = $1"
SELECT_REFRESH_TOKEN = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = $1 AND token_type = 'refresh'"
)
# The same read for a batch of users ($1: their ids).
SELECT_REFRESH_TOKENS = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = ANY($1::text[]) AND token_type = 'refresh'"
)
SELECT_USER_TOKENS = (
    f"SELECT {COLUMNS} FROM auth_vault WHERE user_id = $1 "
    "AND ($2::text IS NULL OR token_type = $2) ORDER BY created_at, id"
)
DELETE_BY_ID = "DELETE FROM auth_vault WHERE id = $1"
DELETE_USER = "DELETE FROM auth_vault WHERE user_id = $1 AND ($2::text IS NULL OR token_type = $2)"
DELETE_SESSION = (
    "DELETE FROM auth_vault WHERE session_state = $1 AND ($2::text IS NULL OR token_type = $2)"
)
PURGE_EXPIRED = "DELETE FROM auth_vault WHERE expires_at <= $1"

# The refresh flow's statements keep lease and access-token times on the database's
# clock (clock_timestamp()), so replicas whose clocks disagree still agree on who holds
# a lease and on when a cached access token lapses.

# The user's entries with the database's time, for the "refresh now?" decision.
SELECT_USER_TOKENS_AND_NOW = (
    f"SELECT {COLUMNS}, clock_timestamp() FROM auth_vault WHERE user_id = $1 "
    "ORDER BY created_at, id"
)

# The same for a batch of users ($1: their ids); each user's rows keep their order.
SELECT_USERS_TOKENS_AND_NOW = (
    f"SELECT {COLUMNS}, clock_timestamp() FROM auth_vault WHERE user_id = ANY($1::text[]) "
    "ORDER BY created_at, id"
)

# Take an entry's refresh lease for $3 seconds if nobody holds it (or it lapsed); returns
# the row as it is once the lease is ours, so a refresh someone just finished is seen.
CLAIM_REFRESH_LEASE = f"""
UPDATE auth_vault
SET lease_owner = $2, lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
RETURNING {COLUMNS}, clock_timestamp()
"""

# Keep the lease while the provider call runs; only its owner can.
RENEW_REFRESH_LEASE = """
UPDATE auth_vault SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
WHERE id = $1 AND lease_owner = $2
RETURNING id
"""

# Store a refresh's outcome, count it in the metadata, release the lease: one statement,
# applied only by the lease's owner and only while the entry holds the token that was
# refreshed ($14). $3-$5 are NULL when the provider sent no new refresh token (the stored
# one is kept); $6 (refresh lifetime, seconds) is NULL when the provider did not say.
RECORD_REFRESH = """
UPDATE auth_vault
SET ciphertext = COALESCE($3, ciphertext),
    seal_version = COALESCE($15, seal_version),
    nonce = COALESCE($4, nonce),
    key_id = COALESCE($5, key_id),
    expires_at = COALESCE(clock_timestamp() + make_interval(secs => $6), expires_at),
    session_state = COALESCE($7, session_state),
    access_ciphertext = $8, access_nonce = $9, access_key_id = $10,
    access_expires_at = clock_timestamp() + make_interval(secs => $11),
    metadata = COALESCE(metadata, '{}'::jsonb) || jsonb_build_object(
        'refreshCount',
        CASE WHEN jsonb_typeof(metadata -> 'refreshCount') = 'number'
             THEN (metadata ->> 'refreshCount')::numeric ELSE 0 END + 1,
        'lastRefresh', $13::text,
        'updatedAt', $13::text),
    updated_at = $12,
    needs_reauth = false,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = $1 AND nonce = $14 AND lease_owner = $2
RETURNING access_expires_at
"""

FORGET_ACCESS_TOKEN = """
UPDATE auth_vault
SET access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
    access_expires_at = NULL
WHERE id = $1
"""

SCHEMA_REVISION = "SELECT version_num FROM alembic_version"

RELEASE_LEASE = (
    "UPDATE auth_vault SET lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = $1 AND lease_owner = $2"
)

# The provider killed the grant: only the lease's owner, and only while the entry still
# holds the token the provider refused (a newer login wins).
MARK_NEEDS_REAUTH = """
UPDATE auth_vault
SET needs_reauth = true,
    access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
    access_expires_at = NULL, updated_at = $4,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND nonce = $3 AND lease_owner = $2
RETURNING id
"""

# Key rotation: rows holding a ciphertext sealed with another key than the primary.
SELECT_ON_OTHER_KEYS = f"""
SELECT {COLUMNS} FROM auth_vault
WHERE (key_id <> $1 OR access_key_id <> $1 OR (token_type = 'offline' AND seal_version < 2))
  AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
ORDER BY id
LIMIT $2
"""

# Re-seal one row in place; applies only if no write changed it since it was read.
# updated_at is left alone: the token did not change, only its encryption.
RESEAL = """
UPDATE auth_vault
SET ciphertext = $3, nonce = $4, key_id = $5,
    access_ciphertext = $6, access_nonce = $7, access_key_id = $8, seal_version = $9
WHERE id = $1 AND nonce = $2
  AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
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
       COUNT(*) FILTER (WHERE expires_at <= $1) AS expired,
       COUNT(*) FILTER (WHERE needs_reauth) AS needs_reauth
FROM auth_vault
GROUP BY token_type
ORDER BY token_type
"""

REMEMBER_LOGOUT_TOKEN = """
INSERT INTO auth_vault_seen_logout_token (jti, expires_at) VALUES ($1, $2)
ON CONFLICT (jti) DO NOTHING
RETURNING jti
"""
FORGET_OLD_LOGOUT_TOKENS = "DELETE FROM auth_vault_seen_logout_token WHERE expires_at < $1"


# -- the outbox: events for the app, written with the change they describe ------------

_INSERT_EVENT = (
    "INSERT INTO auth_vault_event (id, type, user_id, entry_id, token_type, occurred_at, "
    "next_attempt_at)"
)
_NEW_EVENT_ID = "'evt_' || replace(gen_random_uuid()::text, '-', '')"

# MARK_NEEDS_REAUTH, and the event saying so ($5: its id), in one statement.
MARK_NEEDS_REAUTH_WITH_EVENT = f"""
WITH marked AS (
  UPDATE auth_vault
  SET needs_reauth = true,
      access_ciphertext = NULL, access_nonce = NULL, access_key_id = NULL,
      access_expires_at = NULL, updated_at = $4,
      lease_owner = NULL, lease_expires_at = NULL
  WHERE id = $1 AND nonce = $3 AND lease_owner = $2
  RETURNING id, user_id, token_type
)
{_INSERT_EVENT}
SELECT $5, 'entry.needs_reauth', user_id, id, token_type, $4, $4 FROM marked
RETURNING entry_id
"""

# Deletes that tell the app: one event ($3: its type, $4: now) per deleted entry.
DELETE_SESSION_WITH_EVENTS = f"""
WITH gone AS (
  DELETE FROM auth_vault WHERE session_state = $1 AND ($2::text IS NULL OR token_type = $2)
  RETURNING id, user_id, token_type
)
{_INSERT_EVENT}
SELECT {_NEW_EVENT_ID}, $3, user_id, id, token_type, $4, $4 FROM gone
"""

DELETE_USER_WITH_EVENTS = f"""
WITH gone AS (
  DELETE FROM auth_vault WHERE user_id = $1 AND ($2::text IS NULL OR token_type = $2)
  RETURNING id, user_id, token_type
)
{_INSERT_EVENT}
SELECT {_NEW_EVENT_ID}, $3, user_id, id, token_type, $4, $4 FROM gone
"""

PURGE_EXPIRED_WITH_EVENTS = f"""
WITH gone AS (
  DELETE FROM auth_vault WHERE expires_at <= $1
  RETURNING id, user_id, token_type
)
{_INSERT_EVENT}
SELECT {_NEW_EVENT_ID}, 'entry.expired', user_id, id, token_type, $2, $2 FROM gone
"""

# Take up to $3 due events for $2 seconds. SKIP LOCKED: replicas claiming at the same
# moment take different events instead of queueing behind each other's row locks; the
# lease keeps them apart afterwards, and lapses if its worker died mid-delivery.
CLAIM_EVENTS = f"""
UPDATE auth_vault_event
SET lease_owner = $1, lease_expires_at = clock_timestamp() + make_interval(secs => $2)
WHERE id IN (
  SELECT id FROM auth_vault_event
  WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
    AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
  ORDER BY next_attempt_at, occurred_at
  LIMIT $3
  FOR UPDATE SKIP LOCKED
)
RETURNING {EVENT_COLUMNS}
"""

# One attempt: logged always; the event's state changes only while $2 holds its lease.
RECORD_DELIVERY = """
WITH done AS (
  UPDATE auth_vault_event
  SET attempts = attempts + 1,
      state = $3,
      next_attempt_at = clock_timestamp() + make_interval(secs => $4),
      delivered_at = CASE WHEN $3 = 'delivered' THEN clock_timestamp() ELSE delivered_at END,
      last_status = $5,
      last_error = $6,
      lease_owner = NULL,
      lease_expires_at = NULL
  WHERE id = $1 AND lease_owner = $2
  RETURNING id
)
INSERT INTO auth_vault_event_delivery (event_id, attempt, at, status, error, duration_ms, worker)
VALUES ($1, $7, $8, $5, $6, $9, $2)
RETURNING (SELECT count(*) FROM done)
"""

# Newest first; each filter applies only when given.
SELECT_EVENTS = f"""
SELECT {EVENT_COLUMNS} FROM auth_vault_event
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR user_id = $2)
ORDER BY occurred_at DESC, id DESC
LIMIT $3
"""

SELECT_EVENT = f"SELECT {EVENT_COLUMNS} FROM auth_vault_event WHERE id = $1"

SELECT_DELIVERIES = """
SELECT event_id, attempt, at, status, error, duration_ms, worker
FROM auth_vault_event_delivery WHERE event_id = ANY($1::text[])
ORDER BY id
"""

# Replay: due now, with a fresh round of attempts; a lease in flight is forgotten.
REQUEUE_EVENT = """
UPDATE auth_vault_event
SET state = 'pending', attempts = 0, next_attempt_at = $2,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1
RETURNING id
"""

PURGE_DELIVERED_EVENTS = (
    "DELETE FROM auth_vault_event WHERE state = 'delivered' AND occurred_at < $1"
)


def _jsonb_text(value: Any) -> str:
    """JSON text whose floats survive jsonb: positional notation with a decimal point.

    jsonb keeps numbers as ``numeric``, which forgets exponent notation: the float
    ``4.555058191882947e+16`` comes back as ``45550581918829470``, which reads as an int
    that is not the float that was stored. ``45550581918829470.0`` keeps its scale, and
    reads back as the same float.
    """
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text if "." in text else f"{text}.0"
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_jsonb_text(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_EXPONENT = re.compile(r"[0-9][eE][-+]?[0-9]")


def _metadata_param(metadata_json: str | None) -> str | None:
    """The metadata for $8; re-encoded only when a number may be in exponent notation."""
    if metadata_json is None or not _EXPONENT.search(metadata_json):
        return metadata_json
    return _jsonb_text(json.loads(metadata_json))


def _params(row: NewRow) -> tuple[Any, ...]:
    """Parameters $1-$10 shared by the upsert and the insert (the insert adds $11)."""
    return (
        row.id,
        row.user_id,
        row.sealed.ciphertext,
        row.sealed.nonce,
        row.sealed.key_id,
        row.expires_at,
        row.session_state,
        _metadata_param(row.metadata_json),
        row.now,
        metadata_stamp(row.now),
    )


def _access_params(row: NewRow) -> tuple[Any, ...]:
    """Parameters $11-$14 of the upsert: the access token that came with the refresh token."""
    access = row.access
    if access is None:
        return (None, None, None, None)
    return (access.ciphertext, access.nonce, access.key_id, row.access_expires_at)


def _audit_params(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.at,
        record.action,
        record.outcome,
        record.caller,
        record.user_id,
        record.entry_id,
        record.request_id,
        record.client_address,
    )


_USER_ID = column_position("user_id")


def _row(record: asyncpg.Record) -> StoredRow:
    return stored_row(record, _same)


def _same(moment: datetime) -> datetime:
    return moment


_SCHEMA_BEHIND = (
    asyncpg.UndefinedTableError,  # 42P01
    asyncpg.UndefinedColumnError,  # 42703
    asyncpg.InvalidColumnReferenceError,  # 42P10: no unique index for ON CONFLICT
)
_DATABASE_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # A connection the server has just closed (e.g. "terminating connection due to
    # administrator command") whose farewell asyncpg is still consuming when the next
    # query is sent: "cannot switch to state 12; another operation (2) is in progress".
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def _is_shared(exc: Exception) -> bool:
    """A batch's failure that every call in it would have met alone too."""
    return isinstance(exc, _SCHEMA_BEHIND + _DATABASE_DOWN)


def _user_id(params: tuple[Any, ...]) -> str:
    user_id: str = params[1]
    return user_id


def default_senders(pool_size: int) -> int:
    """How many statements of one hot kind may be in flight at once: one per 16 pooled
    connections, at least one. Fewer senders make bigger batches, so less CPU per call
    on both sides (on 2 cores, 16 callers: 1 sender beat 2 and 4 on rate, CPU per call
    and p99); a bigger pool, for a bigger server, gets more."""
    return max(1, pool_size // 16)


class PostgresBackend:
    """A pool of asyncpg connections running the statements above."""

    dialect = "postgresql"

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        senders: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._pool = pool
        senders = senders if senders is not None else default_senders(pool.size)
        self._upserts: Coalescer[tuple[Any, ...], str] = Coalescer(
            self._upsert_one,
            self._upsert_batch,
            senders=senders,
            max_batch=max_batch,
            key=_user_id,
            is_shared=_is_shared,
        )
        self._refresh_reads: Coalescer[str, asyncpg.Record | None] = Coalescer(
            self._read_refresh_one,
            self._read_refresh_batch,
            senders=senders,
            max_batch=max_batch,
            is_shared=_is_shared,
        )
        self._state_reads: Coalescer[str, list[asyncpg.Record]] = Coalescer(
            self._read_state_one,
            self._read_state_batch,
            senders=senders,
            max_batch=max_batch,
            is_shared=_is_shared,
        )

    @classmethod
    async def connect(
        cls, url: DatabaseURL, *, min_size: int = 1, max_size: int = 10
    ) -> PostgresBackend:
        pool = ConnectionPool(url.asyncpg_dsn, size=max_size, **url.asyncpg_connect_kwargs())
        try:
            for _ in range(min_size):  # fail at start-up, not at the first call
                async with pool.acquire():
                    pass
        except asyncpg.TargetServerAttributeNotMatched:
            raise UnavailableError(
                f"cannot connect to {url.redacted()}: no host accepts writes "
                f"(target_session_attrs={url.target_session_attrs})"
            ) from None
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise UnavailableError(
                f"cannot connect to {url.redacted()}: {type(exc).__name__}"
            ) from None
        return cls(pool)

    async def _run(self, call: Awaitable[T]) -> T:
        """Await one pool call (acquire, one round trip, release), translating errors."""
        try:
            return await call
        except _SCHEMA_BEHIND:
            raise ConfigurationError(
                "the database schema is missing or not at the newest revision; "
                "run `token-vault db upgrade`"
            ) from None
        except _DATABASE_DOWN as exc:
            raise UnavailableError(f"database unavailable: {type(exc).__name__}") from None

    async def upsert_refresh(self, row: NewRow) -> str:
        return await self._run(self._upserts((*_params(row), *_access_params(row))))

    async def _upsert_one(self, params: tuple[Any, ...]) -> str:
        entry_id: str = await self._pool.fetchval(UPSERT_REFRESH_TOKEN, *params)
        return entry_id

    async def _upsert_batch(self, calls: Sequence[tuple[Any, ...]]) -> list[str]:
        columns = list(zip(*sorted(calls, key=_user_id), strict=True))
        records = await self._pool.fetch(UPSERT_REFRESH_TOKENS, *columns)
        entry_ids: dict[str, str] = {record[0]: record[1] for record in records}
        return [entry_ids[_user_id(params)] for params in calls]

    async def insert(self, row: NewRow) -> str:
        entry_id: str = await self._run(
            self._pool.fetchval(INSERT_TOKEN, *_params(row), row.token_type, row.sealed.version)
        )
        return entry_id

    async def upsert_offline(self, row: NewRow) -> str:
        entry_id: str = await self._run(
            self._pool.fetchval(
                UPSERT_OFFLINE_TOKEN, *_params(row), row.client_id, row.sealed.version
            )
        )
        return entry_id

    async def fetch_client_offline(self, user_id: str, client_id: str) -> StoredRow | None:
        record = await self._run(self._pool.fetchrow(SELECT_CLIENT_OFFLINE, user_id, client_id))
        return _row(record) if record is not None else None

    async def fetch_expiring(
        self, now: datetime, until: datetime, limit: int
    ) -> list[tuple[str, str, datetime]]:
        records = await self._run(self._pool.fetch(SELECT_EXPIRING, now, until, limit))
        return [(r[0], r[1], r[2]) for r in records]

    async def insert_audit(self, record: AuditRecord) -> None:
        await self._run(self._pool.execute(INSERT_AUDIT, *_audit_params(record)))

    async def fetch_audit(self, query: AuditQuery) -> list[AuditRecord]:
        records = await self._run(
            self._pool.fetch(
                SELECT_AUDIT, query.user_id, query.caller, query.action, query.since, query.limit
            )
        )
        return [audit_record(r, _same) for r in records]

    async def purge_audit(self, before: datetime) -> int:
        return _count(await self._run(self._pool.execute(PURGE_AUDIT, before)))

    async def fetch(self, entry_id: str) -> StoredRow | None:
        record = await self._run(self._pool.fetchrow(SELECT_BY_ID, entry_id))
        return _row(record) if record is not None else None

    async def fetch_refresh(self, user_id: str) -> StoredRow | None:
        record = await self._run(self._refresh_reads(user_id))
        return _row(record) if record is not None else None

    async def _read_refresh_one(self, user_id: str) -> asyncpg.Record | None:
        return await self._pool.fetchrow(SELECT_REFRESH_TOKEN, user_id)

    async def _read_refresh_batch(self, user_ids: Sequence[str]) -> list[asyncpg.Record | None]:
        records = await self._pool.fetch(SELECT_REFRESH_TOKENS, user_ids)
        by_user = {record[_USER_ID]: record for record in records}
        return [by_user.get(user_id) for user_id in user_ids]

    async def fetch_user(self, user_id: str, token_type: str | None) -> list[StoredRow]:
        records = await self._run(self._pool.fetch(SELECT_USER_TOKENS, user_id, token_type))
        return [_row(r) for r in records]

    async def delete(self, entry_id: str) -> bool:
        return _count(await self._run(self._pool.execute(DELETE_BY_ID, entry_id))) > 0

    async def delete_user(self, user_id: str, token_type: str | None) -> int:
        return _count(await self._run(self._pool.execute(DELETE_USER, user_id, token_type)))

    async def delete_session(self, session_state: str, token_type: str | None) -> int:
        return _count(
            await self._run(self._pool.execute(DELETE_SESSION, session_state, token_type))
        )

    async def purge_expired(self, now: datetime) -> int:
        return _count(await self._run(self._pool.execute(PURGE_EXPIRED, now)))

    async def fetch_for_refresh(
        self, user_id: str, now: datetime
    ) -> tuple[list[StoredRow], datetime]:
        records = await self._run(self._state_reads(user_id))
        database_now = records[0][-1] if records else now
        return [_row(r) for r in records], database_now

    async def _read_state_one(self, user_id: str) -> list[asyncpg.Record]:
        return await self._pool.fetch(SELECT_USER_TOKENS_AND_NOW, user_id)

    async def _read_state_batch(self, user_ids: Sequence[str]) -> list[list[asyncpg.Record]]:
        by_user: dict[str, list[asyncpg.Record]] = {user_id: [] for user_id in user_ids}
        for record in await self._pool.fetch(SELECT_USERS_TOKENS_AND_NOW, user_ids):
            by_user[record[_USER_ID]].append(record)
        return [list(by_user[user_id]) for user_id in user_ids]

    async def claim_refresh(
        self, entry_id: str, owner: str, now: datetime, lease: timedelta
    ) -> tuple[StoredRow, datetime] | None:
        record = await self._run(
            self._pool.fetchrow(CLAIM_REFRESH_LEASE, entry_id, owner, lease.total_seconds())
        )
        return (_row(record), record[-1]) if record is not None else None

    async def renew_lease(self, entry_id: str, owner: str, now: datetime, lease: timedelta) -> bool:
        renewed = await self._run(
            self._pool.fetchval(RENEW_REFRESH_LEASE, entry_id, owner, lease.total_seconds())
        )
        return renewed is not None

    async def record_refresh(self, write: RefreshWrite) -> datetime | None:
        refresh = write.refresh
        access_expires_at: datetime | None = await self._run(
            self._pool.fetchval(
                RECORD_REFRESH,
                write.entry_id,
                write.owner,
                refresh.ciphertext if refresh else None,
                refresh.nonce if refresh else None,
                refresh.key_id if refresh else None,
                write.refresh_ttl.total_seconds() if write.refresh_ttl is not None else None,
                write.session_state,
                write.access.ciphertext,
                write.access.nonce,
                write.access.key_id,
                write.access_ttl.total_seconds(),
                write.now,
                metadata_stamp(write.now),
                write.expected_nonce,
                refresh.version if refresh else None,
            )
        )
        return access_expires_at

    async def forget_access(self, entry_id: str) -> bool:
        return _count(await self._run(self._pool.execute(FORGET_ACCESS_TOKEN, entry_id))) > 0

    async def release_lease(self, entry_id: str, owner: str) -> None:
        await self._run(self._pool.execute(RELEASE_LEASE, entry_id, owner))

    async def mark_needs_reauth(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime
    ) -> bool:
        marked = await self._run(
            self._pool.fetchval(MARK_NEEDS_REAUTH, entry_id, owner, expected_nonce, now)
        )
        return marked is not None

    async def remember_logout_token(self, jti: str, expires_at: datetime, now: datetime) -> bool:
        async def remember() -> bool:
            async with self._pool.acquire() as con:
                await con.execute(FORGET_OLD_LOGOUT_TOKENS, now)
                first = await con.fetchval(REMEMBER_LOGOUT_TOKEN, jti, expires_at)
                return first is not None

        return await self._run(remember())

    async def rows_on_other_keys(self, primary: str, limit: int, now: datetime) -> list[StoredRow]:
        records = await self._run(self._pool.fetch(SELECT_ON_OTHER_KEYS, primary, limit))
        return [_row(r) for r in records]

    async def reseal(
        self,
        entry_id: str,
        expected_nonce: bytes,
        refresh: Sealed,
        access: Sealed | None,
        now: datetime,
    ) -> bool:
        written = await self._run(
            self._pool.fetchval(
                RESEAL,
                entry_id,
                expected_nonce,
                refresh.ciphertext,
                refresh.nonce,
                refresh.key_id,
                access.ciphertext if access else None,
                access.nonce if access else None,
                access.key_id if access else None,
                refresh.version,
            )
        )
        return written is not None

    async def count_by_key(self) -> dict[str, int]:
        records = await self._run(self._pool.fetch(COUNT_BY_KEY))
        return {str(r[0]): int(r[1]) for r in records}

    async def count_entries(self, now: datetime) -> list[tuple[str, int, int, int]]:
        records = await self._run(self._pool.fetch(COUNT_ENTRIES, now))
        return [(r[0], r[1], r[2], r[3]) for r in records]

    # -- the outbox --------------------------------------------------------------------

    async def mark_needs_reauth_with_event(
        self, entry_id: str, owner: str, expected_nonce: bytes, now: datetime, event_id: str
    ) -> bool:
        marked = await self._run(
            self._pool.fetchval(
                MARK_NEEDS_REAUTH_WITH_EVENT, entry_id, owner, expected_nonce, now, event_id
            )
        )
        return marked is not None

    async def delete_session_with_events(
        self, session_state: str, token_type: str | None, event_type: str, now: datetime
    ) -> int:
        status = await self._run(
            self._pool.execute(
                DELETE_SESSION_WITH_EVENTS, session_state, token_type, event_type, now
            )
        )
        return _count(status)

    async def delete_user_with_events(
        self, user_id: str, token_type: str | None, event_type: str, now: datetime
    ) -> int:
        status = await self._run(
            self._pool.execute(DELETE_USER_WITH_EVENTS, user_id, token_type, event_type, now)
        )
        return _count(status)

    async def purge_expired_with_events(self, cutoff: datetime, now: datetime) -> int:
        return _count(await self._run(self._pool.execute(PURGE_EXPIRED_WITH_EVENTS, cutoff, now)))

    async def claim_events(
        self, owner: str, now: datetime, lease: timedelta, limit: int
    ) -> list[EventRow]:
        records = await self._run(
            self._pool.fetch(CLAIM_EVENTS, owner, lease.total_seconds(), limit)
        )
        return sorted(
            (event_row(r, _same) for r in records), key=lambda e: (e.next_attempt_at, e.id)
        )

    async def record_delivery(self, outcome: DeliveryOutcome) -> bool:
        applied = await self._run(
            self._pool.fetchval(
                RECORD_DELIVERY,
                outcome.event_id,
                outcome.worker,
                outcome.state,
                outcome.retry_in.total_seconds(),
                outcome.status,
                outcome.error,
                outcome.attempt,
                outcome.at,
                outcome.duration_ms,
            )
        )
        return bool(applied)

    async def fetch_events(
        self, state: str | None, user_id: str | None, limit: int
    ) -> list[EventRow]:
        records = await self._run(self._pool.fetch(SELECT_EVENTS, state, user_id, limit))
        return [event_row(r, _same) for r in records]

    async def fetch_event(self, event_id: str) -> EventRow | None:
        record = await self._run(self._pool.fetchrow(SELECT_EVENT, event_id))
        return event_row(record, _same) if record is not None else None

    async def fetch_deliveries(self, event_ids: list[str]) -> list[DeliveryRow]:
        records = await self._run(self._pool.fetch(SELECT_DELIVERIES, event_ids))
        return [delivery_row(r, _same) for r in records]

    async def requeue_event(self, event_id: str, now: datetime) -> bool:
        return await self._run(self._pool.fetchval(REQUEUE_EVENT, event_id, now)) is not None

    async def purge_events(self, before: datetime) -> int:
        return _count(await self._run(self._pool.execute(PURGE_DELIVERED_EVENTS, before)))

    async def schema_revision(self) -> str | None:
        try:
            revision = await self._pool.fetchval(SCHEMA_REVISION)
        except asyncpg.UndefinedTableError:
            return None
        except _DATABASE_DOWN as exc:
            raise UnavailableError(f"database unavailable: {type(exc).__name__}") from None
        return str(revision) if revision is not None else None

    def batch_counts(self) -> dict[str, BatchCounts]:
        return {
            "upsert_refresh": self._upserts.counts,
            "fetch_refresh": self._refresh_reads.counts,
            "fetch_for_refresh": self._state_reads.counts,
        }

    async def close(self) -> None:
        for coalescer in (self._upserts, self._refresh_reads, self._state_reads):
            await coalescer.wait_idle()
        await self._pool.close()
