"""SQLite's database thread: calls in order, concurrent writes in one commit, a failing
call rolled back alone, a lost transaction replayed call by call."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from token_vault.storage.worker import SQLiteWorker


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[SQLiteWorker]:
    path = str(tmp_path / "worker.db")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        return connection

    opened = SQLiteWorker(connect)
    await opened.start()
    yield opened
    await opened.close()


def insert(k: int) -> Callable[[sqlite3.Connection], int]:
    def work(connection: sqlite3.Connection) -> int:
        connection.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, f"v{k}"))
        return k

    return work


def keys(connection: sqlite3.Connection) -> list[int]:
    return [row[0] for row in connection.execute("SELECT k FROM t ORDER BY k")]


async def behind_a_busy_thread(
    worker: SQLiteWorker,
    works: list[Callable[[sqlite3.Connection], object]],
    *,
    write: bool = True,
) -> list[object]:
    """Submit ``works`` while the thread is busy with another call, so all of them are
    queued when it next looks; return their outcomes (results or exceptions)."""
    busy, release = threading.Event(), threading.Event()

    def hold(connection: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    held = worker.run(hold)
    await asyncio.to_thread(busy.wait, 10)
    futures = [worker.run(work, write=write) for work in works]
    release.set()
    await held
    return list(await asyncio.gather(*futures, return_exceptions=True))


async def test_a_lone_call_runs_in_autocommit(worker: SQLiteWorker) -> None:
    assert await worker.run(insert(1)) == 1
    assert await worker.run(lambda c: c.in_transaction, write=False) is False
    assert worker.counts.largest == 1


async def test_writes_that_queued_together_share_one_commit(worker: SQLiteWorker) -> None:
    outcomes = await behind_a_busy_thread(worker, [insert(k) for k in range(10)])
    assert outcomes == list(range(10))
    assert worker.counts.largest == 10
    assert await worker.run(keys, write=False) == list(range(10))


async def test_a_failing_call_is_rolled_back_alone_and_the_others_commit(
    worker: SQLiteWorker,
) -> None:
    await worker.run(insert(5))
    outcomes = await behind_a_busy_thread(worker, [insert(k) for k in (1, 5, 2)])
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], sqlite3.IntegrityError)  # its own error: k=5 exists
    assert outcomes[2] == 2
    assert worker.counts.rolled_back == 1
    assert await worker.run(keys, write=False) == [1, 2, 5]


async def test_a_lost_transaction_runs_each_call_again_alone(worker: SQLiteWorker) -> None:
    def lose_the_transaction(connection: sqlite3.Connection) -> None:
        connection.execute("ROLLBACK")  # as SQLite does itself on some I/O errors
        raise sqlite3.OperationalError("disk I/O error")

    outcomes = await behind_a_busy_thread(worker, [insert(1), lose_the_transaction, insert(2)])
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], sqlite3.OperationalError)
    assert outcomes[2] == 2
    assert worker.counts.split == 1
    assert await worker.run(keys, write=False) == [1, 2]


async def test_calls_run_in_the_order_they_were_submitted(worker: SQLiteWorker) -> None:
    def append(value: str) -> Callable[[sqlite3.Connection], None]:
        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO t (k, v) VALUES (1, ?) ON CONFLICT (k) DO UPDATE SET v = v || ?",
                (value, value),
            )

        return work

    await behind_a_busy_thread(worker, [append(str(n)) for n in range(10)])
    rows = await worker.run(lambda c: c.execute("SELECT v FROM t").fetchall(), write=False)
    assert rows == [("0123456789",)]


def in_transaction(connection: sqlite3.Connection) -> bool:
    return connection.in_transaction


async def test_reads_that_queued_together_run_without_a_transaction(
    worker: SQLiteWorker,
) -> None:
    outcomes = await behind_a_busy_thread(worker, [in_transaction] * 3, write=False)
    assert outcomes == [False, False, False]  # no write lock taken for reads


async def test_reads_queued_with_writes_run_inside_their_transaction(
    worker: SQLiteWorker,
) -> None:
    outcomes = await behind_a_busy_thread(worker, [insert(1), in_transaction, insert(2)])
    assert outcomes == [1, True, 2]


async def test_a_cancelled_call_that_waits_is_skipped(worker: SQLiteWorker) -> None:
    busy, release = threading.Event(), threading.Event()

    def hold(connection: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    held = worker.run(hold)
    await asyncio.to_thread(busy.wait, 10)
    skipped = worker.run(insert(1))
    kept = worker.run(insert(2))
    skipped.cancel()
    release.set()
    await held
    assert await kept == 2
    assert await worker.run(keys, write=False) == [2]


async def test_a_call_after_close_fails(worker: SQLiteWorker) -> None:
    await worker.close()
    with pytest.raises(sqlite3.ProgrammingError):
        worker.run(insert(1))
