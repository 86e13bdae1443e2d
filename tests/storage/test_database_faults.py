"""Database restarts under load: typed "unavailable" errors, recovery without a reopen.

Issue 6, "Database restart under load": 16 callers keep upserting while PostgreSQL is
restarted (``pg_ctl restart -m fast``) and, separately, while its postmaster is killed with
SIGKILL and started again. Calls that fail meanwhile raise :class:`UnavailableError` and
nothing else; the vault recovers by itself within 10 s of the database being back; and the
1,000-upserts invariants hold afterwards (one row and one id per user, every metadata key
of every call that reported success present).

These tests run their own cluster, so the session cluster other tests share is never
restarted. Its ``synchronous_commit`` stays on: a killed server must keep what it reported
as committed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from token_vault import Key, Keyring, TokenVault, UnavailableError
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow

CALLERS = 16
USERS = [f"fault-user-{i}" for i in range(32)]
RECOVERY_BOUND_S = 10.0  # the bound, from the database being back
LOAD_BEFORE_FAULT_S = 1.0
LOAD_AFTER_RECOVERY_S = 1.5
DRAIN_BOUND_S = 60.0  # a safety net so a hung call fails the test instead of hanging CI


# -- the cluster ------------------------------------------------------------------------


def restart_fast(cluster: PgCluster) -> None:
    cluster.restart("fast")


def kill_and_start(cluster: PgCluster) -> None:
    """SIGKILL the postmaster (only it: its backends notice and exit on their own)."""
    cluster.kill()
    cluster.start_again()


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[PgCluster]:
    """A cluster of this module's own, free to be restarted and killed."""
    cluster = PgCluster(settings={"fsync": "off"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fault_database_url(fault_cluster: PgCluster) -> str:
    name = f"faults_{time.monotonic_ns()}"
    fault_cluster.psql(f"CREATE DATABASE {name}", database="postgres")
    url = fault_cluster.url_for(name)
    asyncio.run(migrate.upgrade(DatabaseURL.parse(url)))
    return url


@pytest.fixture
async def fault_vault(fault_database_url: str) -> AsyncIterator[TokenVault]:
    keyring = Keyring([Key.generate("k1")], primary="k1")
    opened = await TokenVault.open(fault_database_url, keyring, pool_size=CALLERS)
    try:
        yield opened
    finally:
        await opened.close()


# -- the load -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    number: int
    user_id: str
    caller: int
    started_at: float
    ended_at: float
    entry_id: str | None  # None when the call raised
    error: BaseException | None


@dataclass(slots=True)
class Load:
    """16 callers upserting, each call adding its own metadata key ``call-<n>``."""

    vault: TokenVault
    calls: list[Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    async def caller(self, caller: int) -> None:
        expires_at = datetime.now(UTC) + timedelta(hours=1)
        while not self.stop.is_set():
            number = next(self.numbers)
            user_id = USERS[number % len(USERS)]
            started = time.monotonic()
            try:
                entry_id = await self.vault.upsert_refresh_token(
                    user_id,
                    f"token-{number}",
                    expires_at,
                    f"session-{number}",
                    {f"call-{number}": number},
                )
            except Exception as exc:
                self.calls.append(
                    Call(number, user_id, caller, started, time.monotonic(), None, exc)
                )
                await asyncio.sleep(0.01)  # a failing caller backs off a little, like a client
            else:
                self.calls.append(
                    Call(number, user_id, caller, started, time.monotonic(), entry_id, None)
                )

    def every_caller_succeeded_since(self, moment: float) -> bool:
        recovered = {c.caller for c in self.calls if c.error is None and c.started_at >= moment}
        return len(recovered) == CALLERS


async def run_through_fault(vault: TokenVault, fault: Callable[[], None]) -> tuple[Load, float]:
    """Run the load, inject ``fault`` (which returns once the database is back), wait for
    every caller to succeed again (at most 10 s), keep the load on a little longer, stop.

    Returns the load and the monotonic time at which the database was back.
    """
    load = Load(vault)
    callers = [asyncio.create_task(load.caller(i)) for i in range(CALLERS)]
    try:
        await asyncio.sleep(LOAD_BEFORE_FAULT_S)
        await asyncio.to_thread(fault)
        back_at = time.monotonic()
        while time.monotonic() - back_at < RECOVERY_BOUND_S:
            if load.every_caller_succeeded_since(back_at):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(LOAD_AFTER_RECOVERY_S)
    finally:
        load.stop.set()
        done, pending = await asyncio.wait(callers, timeout=DRAIN_BOUND_S)
        for task in pending:
            task.cancel()
    assert not pending, f"{len(pending)} caller(s) hung in a call for {DRAIN_BOUND_S:.0f} s"
    for task in done:
        task.result()
    return load, back_at


# -- the checks -----------------------------------------------------------------------------


def describe(errors: list[BaseException]) -> str:
    kinds: dict[str, int] = {}
    for error in errors:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        kinds[name] = kinds.get(name, 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(kinds.items()))


def failures_not_unavailable(load: Load) -> list[str]:
    others = [c.error for c in load.calls if c.error and not isinstance(c.error, UnavailableError)]
    if not others:
        return []
    first = "".join(traceback.format_exception(others[0])).rstrip()
    return [f"calls raised other than UnavailableError: {describe(others)}; first:\n{first}"]


def failures_to_recover(load: Load, back_at: float) -> list[str]:
    after = [c for c in load.calls if c.started_at >= back_at]
    first_ok: dict[int, float] = {}
    for call in after:
        if call.error is None:
            first_ok[call.caller] = min(first_ok.get(call.caller, call.ended_at), call.ended_at)
    if len(first_ok) < CALLERS:
        return [
            f"{CALLERS - len(first_ok)} caller(s) never succeeded after the database was back; "
            f"they saw: {describe([c.error for c in after if c.error])}"
        ]
    recovered_at = max(first_ok.values())
    print(
        f"every caller succeeded again {recovered_at - back_at:.2f} s after the database was back"
    )
    problems = []
    if recovered_at - back_at > RECOVERY_BOUND_S:
        problems.append(f"recovered {recovered_at - back_at:.1f} s after the database was back")
    late = [c.error for c in load.calls if c.error and c.started_at > recovered_at]
    if late:
        problems.append(f"calls still failed after recovery: {describe(late)}")
    if not any(c.error is None and c.started_at > recovered_at for c in load.calls):
        problems.append("no call ran after recovery")
    return problems


async def failures_of_invariants(vault: TokenVault, load: Load) -> list[str]:
    """One row and one id per user; every successful call's metadata key present."""
    problems = []
    succeeded = [c for c in load.calls if c.error is None]
    for user_id in USERS:
        mine = [c for c in succeeded if c.user_id == user_id]
        entries = await vault.list_tokens(user_id)
        if not mine:
            continue
        if len(entries) != 1:
            problems.append(f"{user_id} has {len(entries)} rows")
            continue
        (entry,) = entries
        if {c.entry_id for c in mine} != {entry.id}:
            problems.append(f"{user_id} was given several ids")
        lost = [c.number for c in mine if entry.metadata.get(f"call-{c.number}") != c.number]
        if lost:
            problems.append(f"{user_id} lost the metadata keys of successful calls {lost}")
    return problems


@pytest.mark.parametrize(
    "fault", [restart_fast, kill_and_start], ids=["pg_ctl-restart-fast", "sigkill-postmaster"]
)
async def test_vault_survives_database_fault_under_load(
    fault_cluster: PgCluster,
    fault_vault: TokenVault,
    fault: Callable[[PgCluster], None],
) -> None:
    load, back_at = await run_through_fault(fault_vault, lambda: fault(fault_cluster))

    problems = [
        *failures_not_unavailable(load),
        *failures_to_recover(load, back_at),
        *await failures_of_invariants(fault_vault, load),
    ]
    assert not problems, "\n".join(problems)
    assert sum(c.error is None for c in load.calls) > CALLERS
    failed = sum(c.error is not None for c in load.calls)
    print(f"{len(load.calls)} calls, {failed} raised UnavailableError, invariants hold")
