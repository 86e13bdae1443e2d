"""The vault's connection pool: size limit, waiting, cancellation, broken connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.databases import Databases
from token_vault.storage.connections import ConnectionPool
from token_vault.storage.url import DatabaseURL


@pytest.fixture
async def pool(databases: Databases) -> AsyncIterator[ConnectionPool]:
    url = DatabaseURL.parse(databases.fresh("postgresql"))
    opened = ConnectionPool(url.asyncpg_dsn, size=2)
    yield opened
    await opened.close()


async def test_never_opens_more_than_its_size(pool: ConnectionPool) -> None:
    pids = await asyncio.gather(
        *(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.01)") for _ in range(20))
    )
    assert len(set(pids)) <= 2


async def test_a_cancelled_waiter_leaks_nothing(pool: ConnectionPool) -> None:
    async with pool.acquire(), pool.acquire():
        in_line = asyncio.Event()

        async def wait_in_line() -> object:
            in_line.set()  # the pool is full: the call below queues without awaiting anything
            return await pool.fetchval("SELECT 1")

        waiter = asyncio.create_task(wait_in_line())
        await in_line.wait()  # resumes only once the waiter is suspended in the queue
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert await asyncio.gather(*(pool.fetchval("SELECT 2") for _ in range(4))) == [2] * 4


async def running_on_the_server(pool: ConnectionPool, query: str) -> None:
    """Return once another session of this database is executing ``query``.

    Only the server knows, so this asks it (no in-process event can say so).
    """
    async with asyncio.timeout(10):
        while True:
            active = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query = $1",
                query,
            )
            if active:
                return
            await asyncio.sleep(0.01)


async def test_a_call_cancelled_mid_query_drops_its_connection(pool: ConnectionPool) -> None:
    query = "SELECT pg_backend_pid() FROM pg_sleep(5)"
    slow = asyncio.create_task(pool.fetchval(query))
    await running_on_the_server(pool, query)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await pool.fetchval("SELECT 3") == 3


async def test_a_connection_killed_by_the_server_is_replaced(pool: ConnectionPool) -> None:
    async with pool.acquire() as first, pool.acquire() as second:
        victim = await first.fetchval("SELECT pg_backend_pid()")
        assert await second.fetchval("SELECT pg_terminate_backend($1)", victim)
    results: list[object] = []
    for _ in range(4):  # the dead one fails once at most, then a fresh one is opened
        try:
            results.append(await pool.fetchval("SELECT 4"))
        except Exception as exc:
            results.append(exc)
    first, *rest = results
    assert rest == [4, 4, 4]
    # The first call either found the connection already closed and opened a fresh one,
    # or used it and got asyncpg's error for a connection the server has closed.
    assert first == 4 or type(first).__module__.startswith("asyncpg."), repr(first)
