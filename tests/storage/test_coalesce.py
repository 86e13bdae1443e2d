"""Concurrent calls sent together: the rules of the Coalescer, then the vault on both
databases (PostgreSQL's batch statements, SQLite's shared commit) under 1,000 calls.

No timings here: these tests pin what a caller sees. Each call keeps its own result,
its own error and its own cancellation, calls for one user apply in arrival order, and
a call the database rejects fails alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from token_vault import Keyring, TokenVault
from token_vault.storage.coalesce import Coalescer
from token_vault.storage.url import DatabaseURL

CALLS = 1000
USERS = 50


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


# -- the Coalescer's rules, on a fake statement -----------------------------------------


class Statement:
    """A statement with a plain and a batch form that records what was sent. While
    held, each send waits until released, so a test decides what is in flight."""

    def __init__(self, *, fail_batch: Exception | None = None) -> None:
        self.sent: list[list[str]] = []  # each send: the calls it carried
        self.fail_batch = fail_batch
        self.holding = False
        self.gates: list[asyncio.Event] = []

    def hold(self) -> None:
        self.holding = True

    def release_one(self) -> None:
        """Let the oldest held send return."""
        next(gate for gate in self.gates if not gate.is_set()).set()

    def release(self) -> None:
        """Let every send return, now and from now on."""
        self.holding = False
        for gate in self.gates:
            gate.set()

    async def _held(self) -> None:
        if self.holding:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()

    async def one(self, call: str) -> str:
        self.sent.append([call])
        await self._held()
        if call.startswith("bad"):
            raise ValueError(call)
        return call.upper()

    async def batch(self, calls: Sequence[str]) -> list[str | Exception]:
        self.sent.append(list(calls))
        await self._held()
        if self.fail_batch is not None:
            raise self.fail_batch
        return [call.upper() for call in calls]


def user_of(call: str) -> str:
    return call.split(":")[0]


async def started(coalescer: Coalescer[str, str], calls: list[str]) -> list[asyncio.Task[str]]:
    """Start one task per call, in order, and let each reach the coalescer."""
    tasks = [asyncio.create_task(coalescer(call)) for call in calls]
    await asyncio.sleep(0)
    return tasks


async def test_a_call_is_sent_alone_at_once_when_nothing_is_in_flight() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1)
    assert await coalescer("a") == "A"
    assert await coalescer("b") == "B"
    assert statement.sent == [["a"], ["b"]]


async def test_what_queues_while_a_statement_runs_goes_as_one_batch() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1)
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "c", "d"])
    assert statement.sent == [["a"]]  # b, c, d wait: the one sender is busy
    statement.release()
    assert await asyncio.gather(*tasks) == ["A", "B", "C", "D"]
    assert statement.sent == [["a"], ["b", "c", "d"]]
    assert coalescer.counts.statements == 2
    assert coalescer.counts.largest == 3


async def test_up_to_senders_calls_go_alone_side_by_side() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=2)
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "c"])
    assert statement.sent == [["a"], ["b"]]
    statement.release()
    await asyncio.gather(*tasks)
    assert statement.sent[2:] == [["c"]]


async def test_batches_are_bounded() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1, max_batch=3)
    statement.hold()
    tasks = await started(coalescer, [f"c{n}" for n in range(8)])
    statement.release()
    await asyncio.gather(*tasks)
    assert [len(sent) for sent in statement.sent] == [1, 3, 3, 1]


async def test_calls_with_one_key_never_share_a_batch_and_keep_their_order() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1, key=user_of)
    statement.hold()
    calls = ["u1:1", "u1:2", "u2:1", "u1:3", "u2:2", "u3:1"]
    tasks = await started(coalescer, calls)
    statement.release()
    assert await asyncio.gather(*tasks) == [call.upper() for call in calls]
    assert statement.sent == [["u1:1"], ["u1:2", "u2:1", "u3:1"], ["u1:3", "u2:2"]]


async def test_a_key_in_flight_holds_back_only_its_own_next_call() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=4, key=user_of)
    statement.hold()
    tasks = await started(coalescer, ["u1:1", "u1:2", "u2:1"])
    await asyncio.sleep(0)  # the senders started for the queued calls take what they may
    assert statement.sent == [["u1:1"], ["u2:1"]]  # u1:2 waits until u1:1 is done
    statement.release()
    await asyncio.gather(*tasks)
    assert statement.sent == [["u1:1"], ["u2:1"], ["u1:2"]]


async def test_a_call_cancelled_while_it_waits_is_never_sent() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1)
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "c"])
    tasks[1].cancel()
    statement.release()
    assert await tasks[0] == "A"
    assert await tasks[2] == "C"
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert statement.sent == [["a"], ["c"]]


async def test_cancelling_a_caller_does_not_cancel_its_batch() -> None:
    statement = Statement()
    coalescer = Coalescer(statement.one, statement.batch, senders=1)
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "c", "d"])
    statement.release_one()
    assert await tasks[0] == "A"
    await asyncio.sleep(0)
    assert statement.sent[-1] == ["b", "c", "d"]  # the batch is in flight, held
    tasks[2].cancel()
    await asyncio.sleep(0)
    statement.release()
    assert await tasks[1] == "B"
    assert await tasks[3] == "D"
    assert tasks[2].cancelled()


async def test_a_failed_batch_is_sent_again_call_by_call() -> None:
    statement = Statement(fail_batch=RuntimeError("the batch was aborted"))
    coalescer = Coalescer(statement.one, statement.batch, senders=1)
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "bad", "c"])
    statement.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[:2] == ["A", "B"]
    assert isinstance(outcomes[2], ValueError)  # its own error, as it would have been alone
    assert outcomes[3] == "C"
    assert statement.sent == [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]]
    assert coalescer.counts.split == 1


async def test_a_failure_every_call_shares_reaches_each_without_retries() -> None:
    down = ConnectionError("the database is down")
    statement = Statement(fail_batch=down)
    coalescer = Coalescer(
        statement.one,
        statement.batch,
        senders=1,
        is_shared=lambda exc: isinstance(exc, ConnectionError),
    )
    statement.hold()
    tasks = await started(coalescer, ["a", "b", "c"])
    statement.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] == "A"
    assert outcomes[1:] == [down, down]
    assert statement.sent == [["a"], ["b", "c"]]


# -- the vault on both databases --------------------------------------------------------


@pytest.fixture
async def small_vault(database_url: str, keyring: Keyring) -> AsyncIterator[TokenVault]:
    """A vault with a small pool, so many calls wait and go together."""
    opened = await TokenVault.open(database_url, keyring, pool_size=4)
    try:
        yield opened
    finally:
        await opened.close()


async def upsert(vault: TokenVault, n: int, **metadata: object) -> str:
    return await vault.upsert_refresh_token(
        f"user-{n % USERS}", f"token-{n}", soon(), f"session-{n}", {f"call-{n}": n, **metadata}
    )


def went_together(vault: TokenVault) -> bool:
    """Whether some statement (or SQLite transaction) carried more than one call."""
    return any(counts.largest > 1 for counts in vault.batch_counts().values())


async def assert_one_row_per_user_with(vault: TokenVault, ids: dict[int, str]) -> None:
    """One refresh row per user, whose id every stored call got back, holding the
    metadata key of every call that reported success."""
    for user in range(USERS):
        entries = await vault.list_tokens(f"user-{user}")
        assert len(entries) == 1
        (entry,) = entries
        mine = {n: entry_id for n, entry_id in ids.items() if n % USERS == user}
        assert set(mine.values()) == {entry.id}
        assert {f"call-{n}" for n in mine} <= set(entry.metadata)


async def test_1000_concurrent_upserts_give_one_row_and_one_id_per_user(
    small_vault: TokenVault,
) -> None:
    ids = await asyncio.gather(*(upsert(small_vault, n) for n in range(CALLS)))
    await assert_one_row_per_user_with(small_vault, dict(enumerate(ids)))
    for user in range(USERS):
        (entry,) = await small_vault.list_tokens(f"user-{user}")
        assert {f"call-{n}" for n in range(user, CALLS, USERS)} <= set(entry.metadata)
    assert went_together(small_vault)


async def test_calls_for_one_user_apply_in_arrival_order(small_vault: TokenVault) -> None:
    calls = 30

    async def one_user(n: int) -> str:
        return await small_vault.upsert_refresh_token(
            "only-user", f"token-{n}", soon(), f"session-{n}", {"last": n, f"call-{n}": n}
        )

    others = [upsert(small_vault, n) for n in range(200)]  # so the calls queue and batch
    ids = await asyncio.gather(*(one_user(n) for n in range(calls)), *others)
    assert len(set(ids[:calls])) == 1
    entry = await small_vault.get_refresh_token("only-user")
    assert entry is not None
    assert entry.token == f"token-{calls - 1}"
    assert entry.session_state == f"session-{calls - 1}"
    assert entry.metadata["last"] == calls - 1
    assert {f"call-{n}" for n in range(calls)} <= set(entry.metadata)


POISON = "poison"


async def reject_poison(database_url: str) -> type[Exception]:
    """Make the database itself refuse any row whose metadata holds the key "poison"
    (a constraint on PostgreSQL, triggers on SQLite); returns the error it raises."""
    url = DatabaseURL.parse(database_url)
    if url.is_sqlite:
        with sqlite3.connect(url.sqlite_path) as connection:
            for event in ("INSERT", "UPDATE"):
                connection.execute(
                    f"CREATE TRIGGER auth_vault_no_poison_{event.lower()} "
                    f"BEFORE {event} ON auth_vault "
                    f"WHEN json_extract(NEW.metadata, '$.{POISON}') IS NOT NULL "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned metadata'); END"
                )
        return sqlite3.IntegrityError
    connection = await asyncpg.connect(url.asyncpg_dsn)
    try:
        await connection.execute(
            "ALTER TABLE auth_vault ADD CONSTRAINT auth_vault_no_poison_check "
            f"CHECK (NOT (metadata ? '{POISON}'))"
        )
    finally:
        await connection.close()
    check_violation: type[Exception] = asyncpg.CheckViolationError
    return check_violation


async def test_a_call_the_database_rejects_fails_alone(database_url: str, keyring: Keyring) -> None:
    rejected = await reject_poison(database_url)
    poisoned = set(range(107, CALLS, 200))  # 5 calls, all queued behind others
    async with await TokenVault.open(database_url, keyring, pool_size=4) as vault:
        with pytest.raises(rejected, match="poison"):  # what one such call gets alone
            await upsert(vault, 7, **{POISON: True})
        outcomes = await asyncio.gather(
            *(upsert(vault, n, **({POISON: True} if n in poisoned else {})) for n in range(CALLS)),
            return_exceptions=True,
        )
        for n, outcome in enumerate(outcomes):
            if n in poisoned:
                assert isinstance(outcome, rejected), (n, outcome)
                assert "poison" in str(outcome)
            else:
                assert isinstance(outcome, str), (n, outcome)
        ids = {n: outcome for n, outcome in enumerate(outcomes) if isinstance(outcome, str)}
        await assert_one_row_per_user_with(vault, ids)
        for n in poisoned:
            (entry,) = await vault.list_tokens(f"user-{n % USERS}")
            assert POISON not in entry.metadata
            assert f"call-{n}" not in entry.metadata
        counts = vault.batch_counts()
        if vault.dialect == "postgresql":
            assert counts["upsert_refresh"].split >= 1  # a batch failed, its calls went alone
        else:
            assert counts["transaction"].rolled_back >= 1  # rolled back to its savepoint


async def test_cancelled_callers_leave_the_others_stored(small_vault: TokenVault) -> None:
    tasks = [asyncio.create_task(upsert(small_vault, n)) for n in range(CALLS)]
    for _ in range(3):  # cancel some while they wait, some while their batch runs
        await asyncio.sleep(0)
        for n in range(0, CALLS, 7):
            tasks[n].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    ids = {}
    for n, outcome in enumerate(outcomes):
        if n % 7 == 0:
            assert isinstance(outcome, asyncio.CancelledError | str), (n, outcome)
        else:
            assert isinstance(outcome, str), (n, outcome)
        if isinstance(outcome, str):
            ids[n] = outcome
    assert any(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    await assert_one_row_per_user_with(small_vault, ids)
    # The vault carries on: a plain call afterwards works.
    assert await upsert(small_vault, USERS, after=True) == ids[USERS]


async def test_concurrent_reads_each_get_their_own_users_entry(small_vault: TokenVault) -> None:
    ids = {u: await upsert(small_vault, u) for u in range(USERS)}
    users = [f"user-{n % (USERS + 10)}" for n in range(CALLS)]  # 10 users have no entry
    entries, states = await asyncio.gather(
        asyncio.gather(*(small_vault.get_refresh_token(u) for u in users)),
        asyncio.gather(*(small_vault.refresh_state(u) for u in users)),
    )
    for user, entry, state in zip(users, entries, states, strict=True):
        number = int(user.split("-")[1])
        if number >= USERS:
            assert entry is None
            assert state is None
            continue
        assert entry is not None
        assert state is not None
        assert (entry.user_id, entry.id, entry.token) == (user, ids[number], f"token-{number}")
        assert (state.user_id, state.entry_id) == (user, ids[number])
    first = next(e for e in entries if e is not None and e.user_id == "user-0")
    again = [e for e in entries if e is not None and e.user_id == "user-0" and e is not first]
    assert again
    assert all(e.metadata is not first.metadata for e in again)  # no shared mutable state
    if small_vault.dialect == "postgresql":
        counts = small_vault.batch_counts()
        assert counts["fetch_refresh"].largest > 1
        assert counts["fetch_for_refresh"].largest > 1
