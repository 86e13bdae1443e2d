"""Concurrent calls of one kind sent together: one statement for what queued meanwhile.

A :class:`Coalescer` stands in front of one statement that has two forms: the plain one
for a single call, and a batch form that does the same for many calls in one round trip
(``unnest($1::text[], ...)`` or ``= ANY($1)`` on PostgreSQL). It adds no wait and no
timer:

- a call is sent at once, alone, in its caller's task, while fewer than ``senders``
  statements of this kind are in flight;
- otherwise it queues; when a statement in flight returns, its sender takes what queued
  meanwhile (at most ``max_batch`` calls) and sends it as one batch, in a task of its own,
  so cancelling a caller never cancels the batch it is in (its call still runs; only its
  answer is dropped); a call cancelled while it waits is never sent;
- with a ``key`` (the user id of a write), calls with one key never share a batch and are
  never in flight together: each waits for the one before it, so calls for one user are
  applied in the order they arrived;
- a batch that fails as a whole is not the answer for every call in it: unless the
  failure is shared by every call (``is_shared``: the database is down, the schema
  missing), each call is sent again alone and gets its own result or its own error.

The batch form returns one outcome per call, in the calls' order: a result, or the
exception that call alone would have raised.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["BatchCounts", "Coalescer"]

CallT = TypeVar("CallT")
ResultT = TypeVar("ResultT")

DEFAULT_MAX_BATCH = 64


@dataclass(slots=True)
class BatchCounts:
    """How many statements (or transactions) carried how many calls, and how batches
    failed: ``split``, batches that failed as a whole and whose calls were sent again
    alone; ``rolled_back``, calls rolled back alone inside a batch that went on."""

    statements: int = 0
    calls: int = 0
    largest: int = 0
    by_size: dict[int, int] = field(default_factory=dict)  # calls in a statement -> statements
    split: int = 0
    rolled_back: int = 0

    def count(self, size: int) -> None:
        self.statements += 1
        self.calls += size
        self.largest = max(self.largest, size)
        self.by_size[size] = self.by_size.get(size, 0) + 1

    @property
    def mean(self) -> float:
        return self.calls / self.statements if self.statements else 0.0

    def merged(self, other: BatchCounts) -> BatchCounts:
        by_size = dict(self.by_size)
        for size, statements in other.by_size.items():
            by_size[size] = by_size.get(size, 0) + statements
        return BatchCounts(
            self.statements + other.statements,
            self.calls + other.calls,
            max(self.largest, other.largest),
            by_size,
            self.split + other.split,
            self.rolled_back + other.rolled_back,
        )


@dataclass(slots=True)
class _Waiting(Generic[CallT, ResultT]):
    call: CallT
    key: Hashable
    future: asyncio.Future[ResultT]


class Coalescer(Generic[CallT, ResultT]):
    """Send calls alone while few are in flight, and in batches while many wait."""

    def __init__(
        self,
        send_one: Callable[[CallT], Awaitable[ResultT]],
        send_batch: Callable[[Sequence[CallT]], Awaitable[Sequence[ResultT | Exception]]],
        *,
        senders: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        key: Callable[[CallT], Hashable] | None = None,
        is_shared: Callable[[Exception], bool] = lambda exc: False,
    ) -> None:
        if senders < 1 or max_batch < 1:
            raise ValueError("senders and max_batch must be at least 1")
        self._send_one = send_one
        self._send_batch = send_batch
        self._senders = senders
        self._max_batch = max_batch
        self._key = key
        self._is_shared = is_shared
        self._busy = 0  # statements of this kind in flight (alone or batched)
        self._queue: deque[_Waiting[CallT, ResultT]] = deque()
        self._in_flight: set[Hashable] = set()  # keys of calls in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = BatchCounts()

    async def __call__(self, call: CallT) -> ResultT:
        key = self._key(call) if self._key is not None else None
        if self._busy < self._senders and not self._queue and key not in self._in_flight:
            return await self._alone(call, key)
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(call, key, future))
        if self._busy < self._senders:
            self._start_sender()
        return await future

    async def _alone(self, call: CallT, key: Hashable) -> ResultT:
        """The plain path: this caller's own statement, in its own task."""
        self._busy += 1
        if key is not None:
            self._in_flight.add(key)
        self.counts.count(1)
        try:
            return await self._send_one(call)
        finally:
            self._busy -= 1
            if key is not None:
                self._in_flight.discard(key)
            if self._queue:
                self._start_sender()

    def _start_sender(self) -> None:
        self._busy += 1
        task = asyncio.get_running_loop().create_task(self._send_queued())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting[CallT, ResultT]]:
        """What queued, oldest first, skipping cancelled calls and calls whose key is in
        flight or already in this batch (they stay queued, in order, for a later one)."""
        batch: list[_Waiting[CallT, ResultT]] = []
        queue = self._queue
        if self._key is None:
            while queue and len(batch) < self._max_batch:
                waiting = queue.popleft()
                if not waiting.future.done():
                    batch.append(waiting)
            return batch
        left: deque[_Waiting[CallT, ResultT]] = deque()
        while queue and len(batch) < self._max_batch:
            waiting = queue.popleft()
            if waiting.future.done():
                continue
            if waiting.key in self._in_flight:
                left.append(waiting)
                continue
            self._in_flight.add(waiting.key)
            batch.append(waiting)
        if left:
            left.extend(queue)
            self._queue = left
        return batch

    async def _send_queued(self) -> None:
        """A sender: send what queued, again and again, until nothing can be sent."""
        try:
            while batch := self._take():
                try:
                    await self._send(batch)
                finally:
                    if self._key is not None:
                        for waiting in batch:
                            self._in_flight.discard(waiting.key)
        finally:
            self._busy -= 1

    async def _send(self, batch: list[_Waiting[CallT, ResultT]]) -> None:
        calls = [waiting.call for waiting in batch]
        self.counts.count(len(calls))
        try:
            outcomes = await self._outcomes(calls)
        except BaseException as exc:  # the sender itself was cancelled (the loop is closing)
            for waiting in batch:
                if waiting.future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    waiting.future.cancel()
                else:
                    waiting.future.set_exception(exc)
            raise
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(outcome, Exception):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)

    async def _outcomes(self, calls: list[CallT]) -> Sequence[ResultT | Exception]:
        if len(calls) == 1:
            return [await self._outcome_alone(calls[0])]
        try:
            return await self._send_batch(calls)
        except Exception as exc:
            if self._is_shared(exc):
                return [exc] * len(calls)
        # The batch failed as a whole: each call again, alone, in arrival order.
        self.counts.split += 1
        return [await self._outcome_alone(call) for call in calls]

    async def _outcome_alone(self, call: CallT) -> ResultT | Exception:
        try:
            return await self._send_one(call)
        except Exception as exc:
            return exc

    async def wait_idle(self) -> None:
        """Return once nothing is queued or in flight in a sender task."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
