"""What every case writes, how the tables are seeded, and the timed loop that drives a case.

Every runner writes the same payload: a 1,200-character refresh token (1,216 bytes once
sealed: AES-GCM adds a 16-byte tag), a 12-byte nonce, a 36-character session id and the
same metadata object. User ids are the decimal numbers ``1..users`` as text, so pgbench
can pick one with ``\\set uid random(1, N)`` and send it as the same text parameter.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from token_vault import Key, Keyring, TokenType
from token_vault.storage.postgres import UPSERT_REFRESH_TOKEN
from token_vault.storage.sqlite import UPSERT_REFRESH_TOKEN as SQLITE_UPSERT_REFRESH_TOKEN
from token_vault.storage.sqlite import connect_sqlite, to_text

__all__ = [
    "REFRESH",
    "Batches",
    "Payload",
    "Run",
    "cpu_seconds",
    "drive_tasks",
    "drive_threads",
    "load_generated_rows",
    "seed_postgres",
    "seed_sqlite",
]

REFRESH = TokenType.REFRESH.value
TOKEN_CHARS = 1200
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@dataclass(frozen=True, slots=True)
class Payload:
    """The one refresh token, expiry, session and metadata that every case writes."""

    keyring: Keyring
    token: str
    expires_at: datetime
    session_state: str
    metadata: dict[str, Any]

    @classmethod
    def make(cls, seed: int = 1) -> Payload:
        rng = random.Random(seed)
        now = datetime(2030, 1, 1, tzinfo=UTC)
        return cls(
            keyring=Keyring([Key.generate("bench")], primary="bench"),
            token="".join(rng.choices(_ALPHABET, k=TOKEN_CHARS)),
            expires_at=now + timedelta(days=30),
            session_state=str(uuid.UUID(int=rng.getrandbits(128))),
            metadata={
                "email": "user@example.com",
                "name": "bench-user",
                "provider": "keycloak",
                "lastRefresh": "2030-01-01T00:00:00.000Z",
                "refreshCount": 7,
            },
        )

    @property
    def metadata_json(self) -> str:
        """The metadata as the vault sends it: compact JSON text."""
        return json.dumps(self.metadata, ensure_ascii=False, separators=(",", ":"))

    def sealed_row(self, user_id: str) -> tuple[bytes, bytes, str]:
        """Ciphertext, nonce and key id of the token sealed for ``user_id``."""
        sealed = self.keyring.seal(self.token, user_id=user_id, token_type=REFRESH)
        return sealed.ciphertext, sealed.nonce, sealed.key_id

    def upsert_params(self, user_id: str, now: datetime) -> tuple[Any, ...]:
        """Parameters $1-$14 of the vault's PostgreSQL upsert, as the vault builds them
        (no access token comes with the refresh token: $11-$14 are NULL)."""
        ciphertext, nonce, key_id = self.sealed_row(user_id)
        return (
            str(uuid.uuid4()),
            user_id,
            ciphertext,
            nonce,
            key_id,
            self.expires_at,
            self.session_state,
            self.metadata_json,
            now,
            stamp(now),
            None,
            None,
            None,
            None,
        )


def stamp(moment: datetime) -> str:
    """The metadata's ``updatedAt`` form, as the vault writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def seed_postgres(dsn: str, payload: Payload, users: int) -> None:
    """One refresh row per user ``1..users``, written with the vault's own upsert."""
    now = datetime.now(UTC)
    rows = [payload.upsert_params(str(uid), now) for uid in range(1, users + 1)]
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.executemany(UPSERT_REFRESH_TOKEN, rows)
        await connection.execute("VACUUM ANALYZE auth_vault")
    finally:
        await connection.close()


async def load_generated_rows(dsn: str, payload: Payload, first: int, last: int) -> None:
    """Rows for users ``first..last`` in one ``INSERT ... SELECT generate_series``.

    Every generated row carries the same pre-sealed ciphertext: the growth case only
    overwrites these rows, it never decrypts them.
    """
    ciphertext, nonce, key_id = payload.sealed_row("generated")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            """
            INSERT INTO auth_vault (id, user_id, token_type, ciphertext, nonce, key_id,
                                    expires_at, session_state, metadata, created_at, updated_at)
            SELECT gen_random_uuid()::text, g::text, 'refresh', $3, $4, $5, $6, $7,
                   $8::jsonb, now(), now()
            FROM generate_series($1::int, $2::int) AS g
            """,
            first,
            last,
            ciphertext,
            nonce,
            key_id,
            payload.expires_at,
            payload.session_state,
            payload.metadata_json,
        )
        await connection.execute("VACUUM ANALYZE auth_vault")
    finally:
        await connection.close()


def seed_sqlite(path: str, payload: Payload, users: int) -> None:
    """One refresh row per user ``1..users`` in the vault's SQLite file, one transaction."""
    now = datetime.now(UTC)
    rows = []
    for params in (payload.upsert_params(str(uid), now) for uid in range(1, users + 1)):
        rows.append(sqlite_params(params))
    connection = connect_sqlite(path)
    try:
        connection.execute("BEGIN")
        connection.executemany(SQLITE_UPSERT_REFRESH_TOKEN.replace("RETURNING id", ""), rows)
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def sqlite_params(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """The PostgreSQL parameters converted the way the vault's SQLite backend does."""
    row_id, user_id, ciphertext, nonce, key_id, expires_at, session, meta, now, at = params[:10]
    return (row_id, user_id, ciphertext, nonce, key_id, to_text(expires_at), session, meta,
            to_text(now), at, *params[10:])  # fmt: skip


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User plus system CPU time of this process (or of its waited-for children)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class Batches:
    """How the vault sent the calls of a timed run: statements (on SQLite, commits),
    the calls they carried, and the most calls one carried."""

    statements: int
    calls: int
    largest: int

    @property
    def mean(self) -> float:
        return self.calls / self.statements if self.statements else 0.0


@dataclass(slots=True)
class Run:
    """One timed run: operations completed, wall seconds, each call's latency (ns), the
    CPU seconds the client (this process, or pgbench) spent meanwhile, and for the vault
    how its calls were batched."""

    ops: int
    seconds: float
    latencies_ns: list[int] = field(repr=False)
    client_cpu: float = 0.0
    batches: Batches | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


async def drive_tasks(
    call: Callable[[str], Awaitable[object]],
    *,
    callers: int,
    users: int,
    duration: float,
    warmup: float,
    seed: int = 7,
    timed: Callable[[], None] | None = None,
) -> Run:
    """``callers`` asyncio tasks calling ``call(user_id)`` for random users until time is up.

    A warm-up of the same shape runs first and is not counted; ``timed()`` is called
    when the counted part starts. The clock stops when the last call in flight has
    returned, so ``ops / seconds`` counts only finished work.
    """
    rng = random.Random(seed)
    latencies: list[int] = []

    async def caller(deadline: float, record: bool) -> None:
        clock = time.perf_counter_ns
        while time.perf_counter() < deadline:
            user_id = str(rng.randint(1, users))
            started = clock()
            await call(user_id)
            if record:
                latencies.append(clock() - started)

    if warmup > 0:
        until = time.perf_counter() + warmup
        await asyncio.gather(*(caller(until, False) for _ in range(callers)))
    if timed is not None:
        timed()
    cpu, start = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(caller(start + duration, True) for _ in range(callers)))
    seconds = time.perf_counter() - start
    return Run(len(latencies), seconds, latencies, cpu_seconds() - cpu)


def drive_threads(
    call: Callable[[str], object],
    *,
    callers: int,
    users: int,
    duration: float,
    warmup: float,
    seed: int = 7,
) -> Run:
    """The same loop as :func:`drive_tasks`, on ``callers`` OS threads (blocking calls)."""
    latencies: list[list[int]] = [[] for _ in range(callers)]

    def caller(index: int, deadline: float, record: bool) -> None:
        rng = random.Random(seed + index)
        clock = time.perf_counter_ns
        mine = latencies[index]
        while time.perf_counter() < deadline:
            user_id = str(rng.randint(1, users))
            started = clock()
            call(user_id)
            if record:
                mine.append(clock() - started)

    def run_all(deadline: float, record: bool) -> None:
        threads = [
            threading.Thread(target=caller, args=(i, deadline, record)) for i in range(callers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    if warmup > 0:
        run_all(time.perf_counter() + warmup, False)
    cpu, start = cpu_seconds(), time.perf_counter()
    run_all(start + duration, True)
    seconds = time.perf_counter() - start
    merged = [latency for mine in latencies for latency in mine]
    return Run(len(merged), seconds, merged, cpu_seconds() - cpu)
