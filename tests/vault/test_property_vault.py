"""Property-based tests: the vault behaves like a plain Python model of it.

A hypothesis state machine runs upserts, offline stores, deletes (by id, user and session),
purges and reads against a dict of expected entries, on PostgreSQL and on SQLite, and
compares every read field by field. A plain property checks the metadata merge,
``{**old, **new, "updatedAt": ...}``, for generated pairs.

The vault is async and hypothesis drives a synchronous machine, so the vault lives on an
event loop of its own in a background thread and each step waits for its call there.
The vault's clock is a fake that moves forward by a little over a millisecond per write,
so ``created_at``, ``updated_at`` and the ``updatedAt`` stamp are known exactly.

Size: ``TOKEN_VAULT_PROPERTY_EXAMPLES`` (default 60) examples of
``TOKEN_VAULT_PROPERTY_STEPS`` (default 30) steps per backend. The issue's figure is
500 x 50::

    TOKEN_VAULT_PROPERTY_EXAMPLES=500 TOKEN_VAULT_PROPERTY_STEPS=50 \\
        .venv/bin/pytest tests/test_property_vault.py -q
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import secrets
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from token_vault import Key, Keyring, TokenType, TokenVault, VaultEntry
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

T = TypeVar("T")

EXAMPLES = int(os.environ.get("TOKEN_VAULT_PROPERTY_EXAMPLES", "60"))
STEPS = int(os.environ.get("TOKEN_VAULT_PROPERTY_STEPS", "30"))

PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS + 1,  # hypothesis counts the @initialize rule as a step
    deadline=None,
    database=None,  # no .hypothesis directory in the checkout; failures print their steps
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE = "'); DROP TABLE auth_vault; --"

# Few users and sessions, so that steps collide on them often.
USERS = ["alice", 'o\'brien "quoted"', HOSTILE, "👩‍💻 émoji-user"]
SESSIONS = ["session-1", "sess'ion; --", "🔑"]


# -- strategies ---------------------------------------------------------------------------

# Kept small on purpose: hypothesis ends a state machine run early once an example has
# drawn most of its 8 KiB of choices, and these sizes let nearly every run reach its full
# number of steps. Variety comes from the characters and nesting, not from length.

# Every character the vault accepts: no NUL (PostgreSQL refuses it), no lone surrogates.
CHARACTERS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")

texts = st.text(CHARACTERS, max_size=10)
keys = st.one_of(
    texts,
    st.sampled_from(['"', "'", "key'\"quote", HOSTILE, "🙂", "ключ", "updatedAt", "a.b", ""]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    st.sampled_from([HOSTILE, "🙂🙃", "\\u0041 not an escape", "\n\t\r"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)
    ),
    max_leaves=6,
)
metadata_objects = st.dictionaries(keys, json_values, max_size=4)
metadata_or_none = st.one_of(st.none(), metadata_objects)

# The prefix keeps generated tokens from being mere substrings of the project's own
# literals (which Hypothesis likes to draw), so the session's leak scan stays exact.
tokens = st.text(CHARACTERS, min_size=1, max_size=16).map(lambda text: f"tok:{text}")
users = st.sampled_from(USERS)
sessions_or_none = st.one_of(st.none(), st.sampled_from(SESSIONS))
token_type_filters = st.sampled_from(
    [None, TokenType.REFRESH, TokenType.OFFLINE, "refresh", "offline"]
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)


# -- the vault on a loop of its own -----------------------------------------------------------


class LoopThread:
    """An event loop running in a daemon thread; :meth:`run` waits for one coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="property-vault-loop", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


START = datetime(2030, 1, 1, tzinfo=UTC)
TICK = timedelta(milliseconds=1, microseconds=7)


@dataclass(slots=True)
class FakeClock:
    """The vault's clock: :meth:`tick` moves it by a bit over a millisecond."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> datetime:
        self.now += TICK
        return self.now

    def reset(self) -> None:
        self.now = START


def stamp(moment: datetime) -> str:
    """The metadata's ``updatedAt``: ISO 8601 UTC to the millisecond, with ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Harness:
    """One open vault on one backend, called synchronously."""

    dialect: str
    vault: TokenVault
    clock: FakeClock
    loop: LoopThread

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coroutine)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def harness(
    request: pytest.FixtureRequest,
    pg_cluster: PgCluster,
    tmp_path_factory: pytest.TempPathFactory,
    loop_thread: LoopThread,
) -> Iterator[Harness]:
    dialect = str(request.param)
    name = f"property_{secrets.token_hex(6)}"
    if dialect == "postgresql":
        pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
        url = pg_cluster.url_for(name)
    else:
        path: Path = tmp_path_factory.mktemp("property") / f"{name}.db"
        url = f"sqlite:///{path}"
        loop_thread.run(migrate.upgrade(DatabaseURL.parse(url)))
    clock = FakeClock()
    keyring = Keyring([Key.generate("k1")], primary="k1")
    vault = loop_thread.run(TokenVault.open(url, keyring, clock=clock, pool_size=2))
    try:
        yield Harness(dialect, vault, clock, loop_thread)
    finally:
        loop_thread.run(vault.close())


# -- the model ------------------------------------------------------------------------------


@dataclass(slots=True)
class Expected:
    """What the vault should hold for one entry. ``metadata`` includes ``updatedAt``."""

    id: str
    user_id: str
    token_type: TokenType
    token: str
    expires_at: datetime
    session_state: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime = field(init=False)

    def __post_init__(self) -> None:
        self.updated_at = self.created_at


def assert_entry_matches(entry: VaultEntry | None, expected: Expected | None) -> None:
    if expected is None:
        assert entry is None, f"vault has {entry!r}, model has nothing"
        return
    assert entry is not None, f"vault lost entry {expected.id} of {expected.user_id!r}"
    assert entry.id == expected.id
    assert entry.user_id == expected.user_id
    assert entry.token_type is expected.token_type
    assert entry.token == expected.token, "token differs"
    assert entry.key_id == "k1"
    assert entry.expires_at == expected.expires_at
    assert entry.expires_at.tzinfo is not None
    assert entry.session_state == expected.session_state
    assert entry.created_at == expected.created_at
    assert entry.updated_at == expected.updated_at
    assert_metadata_equal(entry.metadata, expected.metadata)


def assert_metadata_equal(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal apart from ``updatedAt``, and ``updatedAt`` equal on its own."""
    actual = dict(actual)
    expected = dict(expected)
    actual_stamp = actual.pop("updatedAt", None)
    expected_stamp = expected.pop("updatedAt")
    assert actual == expected, "metadata differs"
    assert actual_stamp == expected_stamp, "updatedAt differs"


class VaultMachine(RuleBasedStateMachine):
    """Writes, deletes and reads on the vault, mirrored on a dict of :class:`Expected`."""

    harness: ClassVar[Harness]

    entry_ids = Bundle("entry_ids")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Expected] = {}

    @initialize()
    def start_empty(self) -> None:
        for user_id in USERS:
            self.harness.run(self.harness.vault.delete_user(user_id))
        self.harness.clock.reset()

    # -- model queries ------------------------------------------------------------------

    def refresh_entry(self, user_id: str) -> Expected | None:
        found = [
            e
            for e in self.model.values()
            if e.user_id == user_id and e.token_type is TokenType.REFRESH
        ]
        assert len(found) <= 1
        return found[0] if found else None

    def user_entries(self, user_id: str, token_type: TokenType | str | None) -> list[Expected]:
        found = [
            e
            for e in self.model.values()
            if e.user_id == user_id and (token_type is None or e.token_type == token_type)
        ]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def forget(self, doomed: list[Expected]) -> None:
        for entry in doomed:
            del self.model[entry.id]

    # -- writes ---------------------------------------------------------------------------

    @rule(
        target=entry_ids,
        user_id=users,
        token=tokens,
        expires_at=moments,
        session_state=sessions_or_none,
        metadata=metadata_or_none,
        through_store=st.booleans(),
    )
    def upsert_refresh_token(
        self,
        user_id: str,
        token: str,
        expires_at: datetime,
        session_state: str | None,
        metadata: dict[str, Any] | None,
        through_store: bool,
    ) -> str:
        now = self.harness.clock.tick()
        vault = self.harness.vault
        if through_store:
            entry_id = self.harness.run(
                vault.store(
                    user_id,
                    token,
                    token_type=TokenType.REFRESH,
                    expires_at=expires_at,
                    session_state=session_state,
                    metadata=metadata,
                )
            )
        else:
            entry_id = self.harness.run(
                vault.upsert_refresh_token(user_id, token, expires_at, session_state, metadata)
            )
        new = copy.deepcopy(metadata or {})
        existing = self.refresh_entry(user_id)
        if existing is None:
            assert entry_id not in self.model, "a new refresh token reused an id"
            expected = Expected(
                entry_id,
                user_id,
                TokenType.REFRESH,
                token,
                expires_at,
                session_state,
                {**new, "updatedAt": stamp(now)},
                now,
            )
            self.model[entry_id] = expected
        else:
            assert entry_id == existing.id, "upsert did not keep the refresh token's id"
            existing.token = token
            existing.expires_at = expires_at
            existing.session_state = session_state
            existing.metadata = {**existing.metadata, **new, "updatedAt": stamp(now)}
            existing.updated_at = now
        return entry_id

    @rule(
        target=entry_ids,
        user_id=users,
        token=tokens,
        expires_at=moments,
        session_state=sessions_or_none,
        metadata=metadata_or_none,
    )
    def store_offline_token(
        self,
        user_id: str,
        token: str,
        expires_at: datetime,
        session_state: str | None,
        metadata: dict[str, Any] | None,
    ) -> str:
        now = self.harness.clock.tick()
        entry_id = self.harness.run(
            self.harness.vault.store(
                user_id,
                token,
                token_type=TokenType.OFFLINE,
                expires_at=expires_at,
                session_state=session_state,
                metadata=metadata,
            )
        )
        assert entry_id not in self.model, "an offline store reused an id"
        self.model[entry_id] = Expected(
            entry_id,
            user_id,
            TokenType.OFFLINE,
            token,
            expires_at,
            session_state,
            {**copy.deepcopy(metadata or {}), "updatedAt": stamp(now)},
            now,
        )
        return entry_id

    # -- deletes --------------------------------------------------------------------------

    @rule(entry_id=entry_ids)
    def delete_entry(self, entry_id: str) -> None:
        existed = self.harness.run(self.harness.vault.delete(entry_id))
        assert existed == (entry_id in self.model)
        self.model.pop(entry_id, None)

    @rule(entry_id=st.uuids().map(str))
    def delete_unknown_entry(self, entry_id: str) -> None:
        assert not self.harness.run(self.harness.vault.delete(entry_id))

    @rule(user_id=users)
    def delete_user(self, user_id: str) -> None:
        doomed = [e for e in self.model.values() if e.user_id == user_id]
        assert self.harness.run(self.harness.vault.delete_user(user_id)) == len(doomed)
        self.forget(doomed)

    @rule(session_state=st.sampled_from(SESSIONS), token_type=token_type_filters)
    def delete_session(self, session_state: str, token_type: TokenType | str | None) -> None:
        doomed = [
            e
            for e in self.model.values()
            if e.session_state == session_state
            and (token_type is None or e.token_type == token_type)
        ]
        deleted = self.harness.run(
            self.harness.vault.delete_session(session_state, token_type=token_type)
        )
        assert deleted == len(doomed)
        self.forget(doomed)

    @rule(now=moments)
    def purge_expired(self, now: datetime) -> None:
        doomed = [e for e in self.model.values() if e.expires_at <= now]
        assert self.harness.run(self.harness.vault.purge_expired_at(now)) == len(doomed)
        self.forget(doomed)

    # -- reads ----------------------------------------------------------------------------

    @rule(entry_id=entry_ids)
    def retrieve(self, entry_id: str) -> None:
        entry = self.harness.run(self.harness.vault.retrieve(entry_id))
        assert_entry_matches(entry, self.model.get(entry_id))

    @rule(entry_id=st.uuids().map(str))
    def retrieve_unknown(self, entry_id: str) -> None:
        assert self.harness.run(self.harness.vault.retrieve(entry_id)) is None

    @rule(user_id=users)
    def get_refresh_token(self, user_id: str) -> None:
        entry = self.harness.run(self.harness.vault.get_refresh_token(user_id))
        assert_entry_matches(entry, self.refresh_entry(user_id))

    @rule(user_id=users, token_type=token_type_filters)
    def list_tokens(self, user_id: str, token_type: TokenType | str | None) -> None:
        entries = self.harness.run(self.harness.vault.list_tokens(user_id, token_type))
        expected = self.user_entries(user_id, token_type)
        assert [e.id for e in entries] == [e.id for e in expected], "list differs"
        for entry, model in zip(entries, expected, strict=True):
            assert_entry_matches(entry, model)

    @invariant()
    def check_everything(self) -> None:
        """After every step, every user's whole list matches the model."""
        for user_id in USERS:
            self.list_tokens(user_id, None)


@pytest.mark.slow
def test_vault_behaves_like_its_model(harness: Harness) -> None:
    class Machine(VaultMachine):
        pass

    Machine.harness = harness
    run_state_machine_as_test(Machine, settings=PROPERTY_SETTINGS)


# -- the merge, on its own ------------------------------------------------------------------

_merge_users = (f"merge-user-{n}" for n in itertools.count())


@settings(PROPERTY_SETTINGS, max_examples=max(EXAMPLES, 100))
@given(old=metadata_objects, new=metadata_objects)
def test_metadata_merge_is_old_then_new_then_updated_at(
    harness: Harness, old: dict[str, Any], new: dict[str, Any]
) -> None:
    user_id = next(_merge_users)
    vault = harness.vault
    expires_at = START + timedelta(days=1)
    first = harness.run(vault.upsert_refresh_token(user_id, "t1", expires_at, None, old))
    now = harness.clock.tick()
    second = harness.run(vault.upsert_refresh_token(user_id, "t2", expires_at, None, new))
    try:
        assert first == second
        entry = harness.run(vault.retrieve(first))
        assert entry is not None
        assert_metadata_equal(entry.metadata, {**old, **new, "updatedAt": stamp(now)})
    finally:
        harness.run(vault.delete_user(user_id))
