"""SQLite's database thread: every call runs there, and concurrent writes share a commit.

The vault's SQLite connection lives on one thread of its own, so an event loop never
blocks on ``fsync`` or on SQLite's busy wait. A call is a function of the connection,
handed to that thread through a queue; its result comes back to the caller's loop.

**Group commit.** The thread takes whatever queued while it ran its last work (at most
``max_batch`` calls). With fewer than two writes among them, each runs as it is, in
autocommit: its statement is its own transaction, as the seed's SQL has it (and reads
never take the write lock). Otherwise all of them run in one transaction,
``BEGIN IMMEDIATE`` ... ``COMMIT``, so they share one commit (one ``fsync``); each runs
inside a savepoint, and a call that fails is rolled back to it and gets its own error
while the others commit. If the transaction itself is lost (its ``COMMIT`` fails, or a
call's error rolled the whole transaction back), nothing of it was kept: each call runs
again alone and gets the outcome it would have had alone. Calls run in the order they
were submitted; a call whose caller was cancelled before the thread took it is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from token_vault.storage.coalesce import DEFAULT_MAX_BATCH, BatchCounts

__all__ = ["SQLiteWorker"]

T = TypeVar("T")

_BEGIN = "BEGIN IMMEDIATE"
_SAVEPOINT = "SAVEPOINT vault_call"
_RELEASE = "RELEASE vault_call"
_ROLLBACK_TO = "ROLLBACK TO vault_call"


@dataclass(slots=True)
class _Call(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    write: bool


class _Stop:
    """Put on the queue by :meth:`SQLiteWorker.close`: close the connection and exit."""


class SQLiteWorker:
    """One thread owning one SQLite connection; runs calls, grouping concurrent ones."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "token-vault-sqlite",
    ) -> None:
        self._connect = connect
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Call[Any] | _Stop] = queue.SimpleQueue()
        self._opened: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.counts = BatchCounts()

    async def start(self) -> None:
        """Start the thread and open the connection on it (its error is raised here)."""
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.create_future()
        self._closed = self._loop.create_future()
        self._thread.start()
        try:
            await self._opened
        except BaseException:
            await asyncio.to_thread(self._thread.join)
            raise

    def run(
        self, work: Callable[[sqlite3.Connection], T], *, write: bool = True
    ) -> asyncio.Future[T]:
        """Queue ``work`` for the database thread; the future holds its outcome.
        ``write=False`` says it only reads (it never needs the shared transaction)."""
        if self._closing:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(work, future, loop, write))
        return future

    async def close(self) -> None:
        """Run what is queued, close the connection, stop the thread."""
        if self._closed is None or self._closing:
            return
        self._closing = True
        self._queue.put(_Stop())
        await self._closed
        await asyncio.to_thread(self._thread.join)

    # -- on the database thread ----------------------------------------------------------

    def _main(self) -> None:
        assert self._loop is not None
        assert self._opened is not None
        assert self._closed is not None
        try:
            connection = self._connect()
        except BaseException as exc:
            _settle(self._loop, self._opened, exc)
            return
        _settle(self._loop, self._opened, None)
        try:
            self._serve(connection)
        finally:
            try:
                connection.close()
            finally:
                _settle(self._loop, self._closed, None)

    def _serve(self, connection: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if isinstance(first, _Stop):
                return
            calls = [first]
            stop = False
            while len(calls) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Stop):
                    stop = True
                    break
                calls.append(item)
            calls = [call for call in calls if not call.future.cancelled()]
            if sum(call.write for call in calls) >= 2:
                self.counts.count(len(calls))
                _deliver(calls, self._together(connection, calls))
            elif calls:
                for _ in calls:
                    self.counts.count(1)
                _deliver(calls, [_alone(connection, call) for call in calls])
            if stop:
                return

    def _together(self, connection: sqlite3.Connection, calls: list[_Call[Any]]) -> list[Any]:
        """Several calls in one transaction, each in a savepoint; one commit."""
        outcomes: list[Any] = []
        try:
            connection.execute(_BEGIN)
            for call in calls:
                connection.execute(_SAVEPOINT)
                try:
                    outcomes.append(call.work(connection))
                except Exception as exc:
                    if not connection.in_transaction:
                        raise  # the whole transaction went with it
                    connection.execute(_ROLLBACK_TO)
                    outcomes.append(exc)
                    self.counts.rolled_back += 1
                connection.execute(_RELEASE)
            connection.execute("COMMIT")
        except Exception:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            self.counts.split += 1
            return [_alone(connection, call) for call in calls]
        return outcomes


def _alone(connection: sqlite3.Connection, call: _Call[Any]) -> Any:
    """One call as it is, in autocommit (each statement commits itself)."""
    try:
        return call.work(connection)
    except Exception as exc:
        return exc


def _deliver(calls: list[_Call[Any]], outcomes: list[Any]) -> None:
    """Hand each outcome to its caller's loop, one wake-up per loop."""
    loop = calls[0].loop
    if all(call.loop is loop for call in calls):
        _call_soon(loop, _resolve_all, calls, outcomes)
        return
    for call, outcome in zip(calls, outcomes, strict=True):
        _call_soon(call.loop, _resolve_all, [call], [outcome])


def _resolve_all(calls: list[_Call[Any]], outcomes: list[Any]) -> None:
    for call, outcome in zip(calls, outcomes, strict=True):
        _resolve(call.future, outcome)


def _resolve(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():  # cancelled meanwhile
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], exc: Any) -> None:
    _call_soon(loop, _resolve, future, exc)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(callback, *args)
