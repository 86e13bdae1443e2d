"""Failover with nothing lost, and no token read from a standby.

A primary and a synchronous standby (``pg_basebackup -R``, ``synchronous_commit = on``,
``synchronous_standby_names`` naming the standby), the vault given both hosts with
``target_session_attrs=read-write``. 16 callers upsert refresh tokens and 4 more ask for
access tokens (each a refresh at a provider, single-flight through the lease) while the
primary is SIGKILLed with every process it started, and the standby is promoted. Every
upsert acknowledged before the kill is on the new primary, callers see only
:class:`UnavailableError` meanwhile, and every caller succeeds again within 10 s of the
promotion.

Then the other half: a standby whose replay is paused (so it lags) is listed first in the
URL, and every read still returns the newest token, because the vault only connects to a
server that accepts writes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from token_vault import Key, Keyring, TokenVault, UnavailableError
from token_vault.oidc.access import AccessTokens
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing import FakeProvider
from token_vault.testing.pgcluster import PgCluster

pytestmark = pytest.mark.slow

UPSERT_CALLERS = 16
ACCESS_CALLERS = 4
USERS = [f"failover-user-{i}" for i in range(32)]
ACCESS_USERS = [f"failover-reader-{i}" for i in range(ACCESS_CALLERS)]
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
RECOVERY_BOUND_S = 10.0  # the issue's bound, from the promotion
LOAD_BEFORE_KILL_S = 1.5
DETECTION_S = 1.0  # what a failover manager takes to notice before it promotes
LOAD_AFTER_RECOVERY_S = 1.5
DRAIN_BOUND_S = 60.0
LEASE = timedelta(seconds=3)  # a refresh in flight at the kill holds its lease this long


def both_hosts(first: PgCluster, second: PgCluster, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return (
        f"postgresql://{first.user}:{first.password}@127.0.0.1:{first.port},"
        f"127.0.0.1:{second.port}/{first.database}" + (f"?{query}" if query else "")
    )


def replay_caught_up(primary: PgCluster, standby: PgCluster) -> bool:
    """The standby has replayed everything the primary has written so far."""
    written = primary.psql("SELECT pg_current_wal_lsn()").strip()
    return standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn").strip() == "t"


def wait_until(check: object, what: str, timeout: float = 30.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


@pytest.fixture
def replicated() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A migrated primary and its synchronous standby, both this test's own."""
    primary = PgCluster(settings={"fsync": "off", "synchronous_commit": "on"})
    primary.start()
    standby = primary.standby("standby1")
    try:
        asyncio.run(migrate.upgrade(DatabaseURL.parse(primary.url)))
        standby.start()
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
        primary.psql("SELECT pg_reload_conf()")
        wait_until(
            lambda: primary.psql("SELECT sync_state FROM pg_stat_replication").strip() == "sync",
            "the standby is synchronous",
        )
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


# -- the load -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    kind: str  # "upsert" or "access"
    number: int
    user_id: str
    caller: int
    started_at: float
    ended_at: float
    error: BaseException | None
    entry_id: str | None = None


@dataclass(slots=True)
class Load:
    vault: TokenVault
    access: AccessTokens
    calls: list[Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    async def upserter(self, caller: int) -> None:
        while not self.stop.is_set():
            number = next(self.numbers)
            user_id = USERS[number % len(USERS)]
            started = time.monotonic()
            try:
                entry_id = await self.vault.upsert_refresh_token(
                    user_id, f"token-{number}", EXPIRES, None, {f"call-{number}": number}
                )
            except Exception as exc:
                self.calls.append(
                    Call("upsert", number, user_id, caller, started, time.monotonic(), exc)
                )
                await asyncio.sleep(0.01)
            else:
                self.calls.append(
                    Call(
                        "upsert", number, user_id, caller, started, time.monotonic(), None, entry_id
                    )
                )

    async def reader(self, caller: int) -> None:
        user_id = ACCESS_USERS[caller - UPSERT_CALLERS]
        while not self.stop.is_set():
            number = next(self.numbers)
            started = time.monotonic()
            try:
                await self.access.get_access_token(user_id)
            except Exception as exc:
                self.calls.append(
                    Call("access", number, user_id, caller, started, time.monotonic(), exc)
                )
                await asyncio.sleep(0.01)
            else:
                self.calls.append(
                    Call("access", number, user_id, caller, started, time.monotonic(), None)
                )
                await asyncio.sleep(0.02)

    def every_caller_succeeded_since(self, moment: float) -> bool:
        ok = {c.caller for c in self.calls if c.error is None and c.started_at >= moment}
        return len(ok) == UPSERT_CALLERS + ACCESS_CALLERS


def describe(errors: list[BaseException]) -> str:
    kinds: dict[str, int] = {}
    for error in errors:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        kinds[name] = kinds.get(name, 0) + 1
    return ", ".join(f"{name} x{count}" for name, count in sorted(kinds.items()))


@pytest.fixture
async def provider_and_vault(
    replicated: tuple[PgCluster, PgCluster],
) -> AsyncIterator[tuple[FakeProvider, TokenVault]]:
    primary, standby = replicated
    url = both_hosts(primary, standby, target_session_attrs="read-write")
    keyring = Keyring([Key.generate("k1")], primary="k1")
    # A provider that keeps refresh tokens (no rotation): an answer lost with the primary
    # is simply asked for again. Access tokens live 2 s, so readers refresh all along.
    fake = FakeProvider(rotate=False, access_ttl=2)
    async with await TokenVault.open(url, keyring, pool_size=UPSERT_CALLERS + 4) as vault:
        for user_id in ACCESS_USERS:
            await vault.upsert_refresh_token(user_id, fake.issue_refresh_token(user_id), EXPIRES)
        yield fake, vault


async def test_failover_to_the_synchronous_standby_loses_no_acknowledged_upsert(
    replicated: tuple[PgCluster, PgCluster],
    provider_and_vault: tuple[FakeProvider, TokenVault],
) -> None:
    primary, standby = replicated
    fake, vault = provider_and_vault
    provider = fake.provider()
    access = AccessTokens(vault, provider, margin=timedelta(seconds=1), lease=LEASE)
    load = Load(vault, access)
    workers = [asyncio.create_task(load.upserter(i)) for i in range(UPSERT_CALLERS)]
    workers += [
        asyncio.create_task(load.reader(i))
        for i in range(UPSERT_CALLERS, UPSERT_CALLERS + ACCESS_CALLERS)
    ]
    try:
        await asyncio.sleep(LOAD_BEFORE_KILL_S)
        killed_at = time.monotonic()
        await asyncio.to_thread(primary.crash)
        await asyncio.sleep(DETECTION_S)
        await asyncio.to_thread(standby.promote)
        promoted_at = time.monotonic()
        while time.monotonic() - promoted_at < RECOVERY_BOUND_S:
            if load.every_caller_succeeded_since(promoted_at):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(LOAD_AFTER_RECOVERY_S)
    finally:
        load.stop.set()
        done, pending = await asyncio.wait(workers, timeout=DRAIN_BOUND_S)
        for task in pending:
            task.cancel()
        await provider.close()
    assert not pending, f"{len(pending)} caller(s) hung in a call for {DRAIN_BOUND_S:.0f} s"
    for task in done:
        task.result()

    # Only UnavailableError, from any caller, at any time.
    others = [c.error for c in load.calls if c.error and not isinstance(c.error, UnavailableError)]
    first = "".join(traceback.format_exception(others[0])) if others else ""
    assert not others, f"calls raised other than UnavailableError: {describe(others)}\n{first}"

    # Every caller back within 10 s of the promotion, and no failure after that.
    first_ok: dict[int, float] = {}
    for call in load.calls:
        if call.error is None and call.started_at >= promoted_at:
            first_ok[call.caller] = min(first_ok.get(call.caller, call.ended_at), call.ended_at)
    assert len(first_ok) == UPSERT_CALLERS + ACCESS_CALLERS, "a caller never came back"
    back_after = max(first_ok.values()) - promoted_at
    assert back_after <= RECOVERY_BOUND_S
    recovered_at = max(first_ok.values())
    late = [c.error for c in load.calls if c.error and c.started_at > recovered_at]
    assert not late, f"calls failed after recovery: {describe(late)}"

    # Every acknowledged upsert is on the new primary (read there, and only there).
    upserts = [c for c in load.calls if c.kind == "upsert" and c.error is None]
    before_kill = [c for c in upserts if c.ended_at <= killed_at]
    new_primary = standby.url + "?target_session_attrs=read-write"
    keyring = vault.keyring
    async with await TokenVault.open(new_primary, keyring) as after:
        stored = {user_id: await after.list_tokens(user_id) for user_id in USERS}
    found_before = 0
    for user_id, entries in stored.items():
        mine = [c for c in upserts if c.user_id == user_id]
        if not mine:
            continue
        assert len(entries) == 1, f"{user_id} has {len(entries)} rows"
        (entry,) = entries
        assert {c.entry_id for c in mine} == {entry.id}, f"{user_id} was given several ids"
        lost = [c.number for c in mine if entry.metadata.get(f"call-{c.number}") != c.number]
        assert not lost, f"{user_id} lost acknowledged upserts {lost}"
        found_before += sum(1 for c in before_kill if c.user_id == user_id)
    assert found_before == len(before_kill)

    failed = [c for c in load.calls if c.error is not None]
    refreshes = sum(1 for c in load.calls if c.kind == "access" and c.error is None)
    print(
        f"{len(before_kill)} upserts acknowledged before the kill, {found_before} found on the "
        f"new primary ({len(upserts)} acknowledged in all, all found); {refreshes} access-token "
        f"calls answered, {fake.refresh_requests} refreshes at the provider; "
        f"{len(failed)} calls raised UnavailableError; every caller back "
        f"{back_after:.2f} s after the promotion ({DETECTION_S:.0f} s after the kill)"
    )


# -- a lagging standby ---------------------------------------------------------------------


@pytest.fixture
def lagging() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A migrated primary and an asynchronous standby whose replay the test can pause."""
    primary = PgCluster(settings={"fsync": "off"})
    primary.start()
    standby = primary.standby("lagging1")
    try:
        asyncio.run(migrate.upgrade(DatabaseURL.parse(primary.url)))
        standby.start()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


async def test_a_lagging_standby_is_never_used_for_token_reads(
    lagging: tuple[PgCluster, PgCluster],
) -> None:
    primary, standby = lagging
    keyring = Keyring([Key.generate("k1")], primary="k1")
    standby_first = both_hosts(standby, primary)  # no target_session_attrs: read-write anyway
    async with await TokenVault.open(standby_first, keyring, pool_size=8) as vault:
        await vault.upsert_refresh_token("alice", "rt-1", EXPIRES)
        await asyncio.to_thread(
            wait_until, lambda: replay_caught_up(primary, standby), "the standby caught up"
        )
        standby.psql("SELECT pg_wal_replay_pause()")
        reads = 0
        for n in range(2, 42):
            await vault.upsert_refresh_token("alice", f"rt-{n}", EXPIRES)
            entries = await asyncio.gather(*(vault.get_refresh_token("alice") for _ in range(8)))
            assert {e.token if e else None for e in entries} == {f"rt-{n}"}
            reads += len(entries)

    # The standby really lags: it still holds the first token's ciphertext.
    on_primary = await _stored_nonce(primary, "alice")
    on_standby = await _stored_nonce(standby, "alice")
    assert on_standby is not None
    assert on_standby != on_primary
    standby.psql("SELECT pg_wal_replay_resume()")

    # Given only the standby, the vault refuses to start rather than read from it.
    standby_only = standby.url + "?target_session_attrs=read-write"
    with pytest.raises(UnavailableError, match="no host accepts writes"):
        await TokenVault.open(standby_only, keyring)
    print(
        f"{reads} reads over 8 connections with the lagging standby listed first: all "
        "returned the newest token; the standby still held the first"
    )


async def _stored_nonce(cluster: PgCluster, user_id: str) -> bytes | None:
    connection = await asyncpg.connect(cluster.url)
    try:
        nonce: bytes | None = await connection.fetchval(
            "SELECT nonce FROM auth_vault WHERE user_id = $1 AND token_type = 'refresh'", user_id
        )
        return nonce
    finally:
        await connection.close()
