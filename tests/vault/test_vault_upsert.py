"""The seed's upsert, on PostgreSQL and SQLite: one statement, one id, merged metadata."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from token_vault import TokenType, TokenVault
from token_vault.storage.migrate import check_duplicates
from token_vault.storage.url import DatabaseURL

HOUR = timedelta(hours=1)


def soon() -> datetime:
    return datetime.now(UTC) + HOUR


async def test_first_upsert_inserts_and_second_keeps_id(vault: TokenVault) -> None:
    id1 = await vault.upsert_refresh_token(
        "user-123", "token-1", soon(), "session-1", {"email": "user@example.com", "count": 1}
    )
    id2 = await vault.upsert_refresh_token("user-123", "token-2", soon(), "session-2", {"count": 2})
    assert id1 == id2
    entry = await vault.retrieve(id1)
    assert entry is not None
    assert entry.token == "token-2"
    assert entry.metadata["email"] == "user@example.com"
    assert entry.metadata["count"] == 2
    assert entry.metadata["updatedAt"]
    assert entry.session_state == "session-2"
    assert entry.token_type is TokenType.REFRESH
    assert entry.updated_at >= entry.created_at


async def test_upsert_replaces_expiry_key_and_session(vault: TokenVault) -> None:
    first_expiry = datetime(2030, 1, 1, tzinfo=UTC)
    later_expiry = datetime(2031, 6, 1, 12, 30, tzinfo=UTC)
    entry_id = await vault.upsert_refresh_token("u", "a", first_expiry, "s1")
    await vault.upsert_refresh_token("u", "b", later_expiry, None)
    entry = await vault.retrieve(entry_id)
    assert entry is not None
    assert entry.expires_at == later_expiry
    assert entry.session_state is None


async def test_metadata_merge_is_shallow_and_new_keys_win(vault: TokenVault) -> None:
    entry_id = await vault.upsert_refresh_token(
        "u", "a", soon(), None, {"nested": {"a": 1, "b": 2}, "keep": True, "n": 0.1}
    )
    await vault.upsert_refresh_token("u", "b", soon(), None, {"nested": {"c": 3}, "n": None})
    entry = await vault.retrieve(entry_id)
    assert entry is not None
    assert entry.metadata["nested"] == {"c": 3}
    assert entry.metadata["keep"] is True
    assert entry.metadata["n"] is None
    assert set(entry.metadata) == {"nested", "keep", "n", "updatedAt"}


async def test_metadata_numbers_round_trip_exactly(vault: TokenVault) -> None:
    values = {"f": 0.30000000000000004, "big": 12345678901234567890, "neg": -1e-300}
    entry_id = await vault.upsert_refresh_token("u", "a", soon(), None, values)
    await vault.upsert_refresh_token("u", "b", soon(), None, {"other": 1})
    entry = await vault.retrieve(entry_id)
    assert entry is not None
    assert {k: entry.metadata[k] for k in values} == values


async def test_ten_concurrent_upserts_return_one_id(vault: TokenVault) -> None:
    ids = await asyncio.gather(
        *(
            vault.upsert_refresh_token(
                "user-123", f"token-{i}", soon(), f"session-{i}", {"refreshCount": i}
            )
            for i in range(10)
        )
    )
    assert len(set(ids)) == 1
    entry = await vault.retrieve(ids[0])
    assert entry is not None
    assert entry.metadata["refreshCount"] in range(10)
    assert entry.token == f"token-{entry.metadata['refreshCount']}"


async def test_seed_duplicate_query_returns_no_rows(vault: TokenVault, database_url: str) -> None:
    for user in ("a", "b", "c"):
        for n in range(3):
            await vault.upsert_refresh_token(user, f"t{n}", soon())
    assert await check_duplicates(DatabaseURL.parse(database_url)) == []


async def test_thousand_concurrent_upserts_over_fifty_users(
    vault: TokenVault, database_url: str
) -> None:
    users = [f"user-{n}" for n in range(50)]

    async def call(n: int) -> tuple[str, str]:
        user = users[n % 50]
        entry_id = await vault.upsert_refresh_token(
            user, f"token-{n}", soon(), f"s-{n}", {f"call-{n}": n}
        )
        return user, entry_id

    results = await asyncio.gather(*(call(n) for n in range(1000)))
    ids_by_user: dict[str, set[str]] = {}
    for user, entry_id in results:
        ids_by_user.setdefault(user, set()).add(entry_id)
    assert all(len(ids) == 1 for ids in ids_by_user.values())
    assert len(ids_by_user) == 50
    for n, user in enumerate(users):
        entries = await vault.list_tokens(user)
        assert len(entries) == 1
        expected = {f"call-{k}" for k in range(n, 1000, 50)}
        assert expected <= set(entries[0].metadata)


async def test_concurrency_really_runs_side_by_side(
    vault: TokenVault, database_url: str, pg_cluster: object
) -> None:
    """The 1,000 calls above really run side by side: they are in flight together.

    On PostgreSQL, calls that queued while a statement ran went out together, many to a
    statement, over the vault's own connections. On SQLite they queue on the vault's one
    connection (the process never holds a second handle on the file) and share commits.
    """
    watching = True

    async def call(n: int) -> None:
        await vault.upsert_refresh_token(f"user-{n % 50}", "t", soon(), None, {str(n): n})

    async def calls() -> None:
        nonlocal watching
        try:
            await asyncio.gather(*(call(n) for n in range(1000)))
        finally:
            watching = False

    if database_url.startswith("postgresql"):
        seen = await asyncio.gather(watch_postgres(database_url, lambda: watching), calls())
        assert 1 <= len(seen[0]) <= 25  # the vault's pool_size
        upserts = vault.batch_counts()["upsert_refresh"]
        assert upserts.calls == 1000
        assert upserts.statements < 500
        assert upserts.largest > 1
    else:
        path = DatabaseURL.parse(database_url).sqlite_path
        seen = await asyncio.gather(watch_sqlite(path, lambda: watching), calls())
        assert len(seen[0]) == 1, f"file descriptors open on the database: {seen[0]}"
        assert vault.batch_counts()["transaction"].statements < 1000


async def watch_postgres(database_url: str, watching: Callable[[], bool]) -> set[int]:
    """The server processes (pids) that served this database while ``watching()``."""
    seen: set[int] = set()
    connection = await asyncpg.connect(database_url)
    try:
        while True:  # at least one look, however fast the calls are
            rows = await connection.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            seen.update(r["pid"] for r in rows)
            if not watching():
                break
            await asyncio.sleep(0.005)
    finally:
        await connection.close()
    return seen


def handles_on(path: str) -> set[int]:
    """This process's file descriptors open on the file at ``path`` (Linux)."""
    target = Path(path).resolve()
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            if fd.resolve() == target:
                found.add(int(fd.name))
    return found


async def watch_sqlite(path: str, watching: Callable[[], bool]) -> set[int]:
    """This process's file descriptors open on the SQLite file while ``watching()``."""
    seen: set[int] = set()
    while True:  # at least one look, however fast the calls are
        seen |= await asyncio.to_thread(handles_on, path)
        if not watching():
            break
        await asyncio.sleep(0.005)
    return seen


async def test_offline_tokens_get_a_row_each_and_survive_refresh_upserts(
    vault: TokenVault,
) -> None:
    ids = [
        await vault.store(
            "u", f"offline-{n}", token_type="offline", expires_at=soon(), metadata={"device": n}
        )
        for n in range(3)
    ]
    assert len(set(ids)) == 3
    refresh_id = await vault.upsert_refresh_token("u", "r1", soon())
    await vault.upsert_refresh_token("u", "r2", soon(), None, {"x": 1})
    offline = await vault.list_tokens("u", TokenType.OFFLINE)
    assert [e.token for e in offline] == ["offline-0", "offline-1", "offline-2"]
    assert all("x" not in e.metadata for e in offline)
    everything = await vault.list_tokens("u")
    assert len(everything) == 4
    assert refresh_id not in ids


async def test_store_of_a_refresh_token_is_the_upsert(vault: TokenVault) -> None:
    a = await vault.store("u", "r1", token_type="refresh", expires_at=soon())
    b = await vault.store("u", "r2", token_type=TokenType.REFRESH, expires_at=soon())
    assert a == b
    assert len(await vault.list_tokens("u", "refresh")) == 1
