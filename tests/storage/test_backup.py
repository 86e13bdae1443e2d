"""Backups proven: a pg_dump taken while writers upsert, restored into a fresh cluster.

Every entry acknowledged before the dump started is in the restore, and every entry
there opens with the keyring (refresh and offline tokens, cached access tokens). The
same restore with the wrong keyring opens none, each with the one opaque
``DecryptionError``. The drill is in docs/operations.md, "Backups and restore".
"""

from __future__ import annotations

import asyncio
import random
import secrets
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.databases import Databases
from token_vault import DecryptionError, Key, Keyring, TokenVault
from token_vault.testing.pgcluster import PgCluster

EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
SEED_USERS = 3_000
NEW_USERS = 500  # writers also create users the seed did not
WRITERS = 8
MAX_WRITES = 20_000  # per writer: the load stops by itself


@dataclass
class Load:
    """What the writers sent, and what the vault acknowledged."""

    sent: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    refresh_acked: set[str] = field(default_factory=set)  # users
    offline_acked: dict[str, str] = field(default_factory=dict)  # entry id -> token
    acks: int = 0


async def write(vault: TokenVault, load: Load, writer: int, stop: asyncio.Event) -> None:
    rng = random.Random(writer)
    for n in range(MAX_WRITES):
        if stop.is_set():
            return
        user = f"user-{rng.randrange(SEED_USERS + NEW_USERS)}"
        token = f"rt-{writer}-{n}-{secrets.token_hex(8)}"
        load.sent[user].add(token)
        if n % 5 == 4:
            entry_id = await vault.store(user, token, expires_at=EXPIRES)
            load.offline_acked[entry_id] = token
        else:
            await vault.upsert_refresh_token(
                user,
                token,
                EXPIRES,
                access_token=f"at-{token}",
                access_expires_at=vault.now() + timedelta(hours=1),
            )
            load.refresh_acked.add(user)
        load.acks += 1


def run_tool(cluster: PgCluster, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(cluster.bindir / tool),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            cluster.user,
            *args,
        ],
        env={"PGPASSWORD": cluster.password, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


async def open_every_entry(
    url: str, keyring: Keyring, ids: list[str]
) -> tuple[dict[str, tuple[str, str]], list[DecryptionError]]:
    """Each entry id's (user, token) for those that open; the errors of those that do not."""
    opened: dict[str, tuple[str, str]] = {}
    refused: list[DecryptionError] = []
    async with await TokenVault.open(url, keyring) as vault:
        for entry_id in ids:
            try:
                entry = await vault.retrieve(entry_id)
            except DecryptionError as exc:
                refused.append(exc)
                continue
            assert entry is not None
            opened[entry_id] = (entry.user_id, entry.token)
    return opened, refused


@pytest.mark.slow
async def test_a_dump_under_write_load_restores_and_opens_only_with_its_keyring(
    pg_cluster: PgCluster, databases: Databases, tmp_path: Path
) -> None:
    url = databases.fresh("postgresql")
    keyring = Keyring([Key.generate("k1")], primary="k1")
    load = Load()
    async with await TokenVault.open(url, keyring, pool_size=WRITERS + 2) as vault:
        users = [f"user-{n}" for n in range(SEED_USERS)]
        for start in range(0, SEED_USERS, 500):
            tokens = {u: f"rt-seed-{u}-{secrets.token_hex(8)}" for u in users[start : start + 500]}
            for user, token in tokens.items():
                load.sent[user].add(token)
            await asyncio.gather(
                *(vault.upsert_refresh_token(u, t, EXPIRES) for u, t in tokens.items())
            )
            load.refresh_acked.update(tokens)

        stop = asyncio.Event()
        writers = [asyncio.create_task(write(vault, load, w, stop)) for w in range(WRITERS)]
        await asyncio.sleep(1.0)  # the load is running
        refresh_before = set(load.refresh_acked)
        offline_before = dict(load.offline_acked)
        acks_before = load.acks
        dump = tmp_path / "vault.dump"
        started = time.perf_counter()
        await asyncio.to_thread(
            run_tool, pg_cluster, "pg_dump", "-Fc", "-f", str(dump), url.rsplit("/", 1)[1]
        )
        dump_seconds = time.perf_counter() - started
        acks_during_dump = load.acks - acks_before
        stop.set()
        await asyncio.gather(*writers)
    assert acks_during_dump > 0, "the dump ran without concurrent writes"

    with PgCluster(settings={"fsync": "off"}) as fresh:
        fresh.psql("CREATE DATABASE restored", database="postgres")
        started = time.perf_counter()
        run_tool(
            fresh,
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "-d",
            "restored",
            str(dump),
        )
        restore_seconds = time.perf_counter() - started
        restored = fresh.url_for("restored")
        ids = fresh.psql("SELECT id FROM auth_vault ORDER BY id", database="restored").split()
        refresh_users = set(
            fresh.psql(
                "SELECT user_id FROM auth_vault WHERE token_type = 'refresh'", database="restored"
            ).split()
        )

        opened, refused = await open_every_entry(restored, keyring, ids)
        assert refused == []
        assert len(opened) == len(ids) >= len(refresh_before) + len(offline_before)
        assert refresh_before <= refresh_users  # every acknowledged user is there
        for entry_id, token in offline_before.items():
            assert opened[entry_id][1] == token  # every acknowledged offline entry, intact
        for user, token in opened.values():
            assert token in load.sent[user]  # and each token is one the writers sent
        async with await TokenVault.open(restored, keyring) as vault:
            with_access = 0
            for user in sorted(refresh_users)[::50]:
                state = await vault.refresh_state(user)
                assert state is not None
                if state.access is not None:
                    assert state.access.token.startswith("at-rt-")
                    with_access += 1
        assert with_access > 0

        wrong = Keyring([Key.generate("k1")], primary="k1")  # same id, other material
        opened_wrong, refused_wrong = await open_every_entry(restored, wrong, ids)
        assert opened_wrong == {}
        assert len(refused_wrong) == len(ids)
        assert {str(e) for e in refused_wrong} == {
            f"stored token could not be decrypted (entry {i})" for i in ids
        }
        other_id = Keyring([Key.generate("k2")], primary="k2")
        opened_other, _ = await open_every_entry(restored, other_id, ids[:100])
        assert opened_other == {}

    print(
        f"backup drill: {len(ids)} entries restored ({len(refresh_before)} refresh users and "
        f"{len(offline_before)} offline entries acknowledged before the dump, all there); "
        f"{acks_during_dump} writes acknowledged while pg_dump ran ({dump_seconds:.2f} s); "
        f"pg_restore {restore_seconds:.2f} s; {len(opened)}/{len(ids)} open with the keyring, "
        f"0/{len(ids)} with the wrong one"
    )
