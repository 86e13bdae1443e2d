"""What PgBouncer in transaction pooling costs the vault: ``python -m benchmarks.pgbouncer``.

One throwaway cluster (fsync on), 10,000 users with a row each, 16 callers. Three ways to
reach it, side by side: direct (asyncpg's named prepared statements), direct with
``statement_cache_size=0`` (what ``?pgbouncer=transaction`` sets), and through PgBouncer
in transaction pooling with 20 server connections. Upserts and reads, ``--seconds`` each
after a second of warm-up; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from token_vault import Key, Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgbouncer import PgBouncer
from token_vault.testing.pgcluster import PgCluster

USERS = 10_000
CALLERS = 16
TOKEN = "t" * 1200


async def rate(call: Callable[[str], Awaitable[object]], seconds: float) -> float:
    """Calls per second of ``CALLERS`` tasks calling in a loop for ``seconds``."""
    counted = 0
    counting = False
    stop = False

    async def caller() -> None:
        nonlocal counted
        while not stop:
            await call(f"user-{random.randrange(USERS)}")
            if counting:
                counted += 1

    tasks = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    await asyncio.sleep(1.0)
    counting = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.monotonic() - started
    stop = True
    await asyncio.gather(*tasks)
    return counted / elapsed


async def measure(url: str, keyring: Keyring, seconds: float) -> tuple[float, float]:
    expires = datetime.now(UTC) + timedelta(days=1)
    async with await TokenVault.open(url, keyring, pool_size=CALLERS) as vault:

        async def upsert(user_id: str) -> object:
            return await vault.upsert_refresh_token(user_id, TOKEN, expires, None, {"n": 1})

        upserts = await rate(upsert, seconds)
        reads = await rate(vault.get_refresh_token, seconds)
    return upserts, reads


async def seed(url: str, keyring: Keyring) -> None:
    await migrate.upgrade(DatabaseURL.parse(url))
    expires = datetime.now(UTC) + timedelta(days=1)
    async with await TokenVault.open(url, keyring, pool_size=CALLERS) as vault:
        for start in range(0, USERS, 500):
            await asyncio.gather(
                *(
                    vault.upsert_refresh_token(f"user-{n}", TOKEN, expires)
                    for n in range(start, start + 500)
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    keyring = Keyring([Key.generate("k1")], primary="k1")
    with PgCluster() as cluster, PgBouncer(cluster, pool_size=20) as bouncer:
        direct = cluster.url + "?pgbouncer=session"  # the vault's parameter, nothing changes
        uncached = cluster.url + "?pgbouncer=transaction"  # statement_cache_size=0, direct
        bounced = bouncer.url_for(cluster.database)
        asyncio.run(seed(direct, keyring))
        rows = []
        for label, url in (
            ("direct", direct),
            ("direct, statement_cache_size=0", uncached),
            (f"PgBouncer {'.'.join(map(str, bouncer.version))}, transaction pooling", bounced),
        ):
            upserts, reads = asyncio.run(measure(url, keyring, args.seconds))
            rows.append(f"| {label} | {upserts:,.0f} | {reads:,.0f} |")
    print(f"{CALLERS} callers, {USERS:,} users, {args.seconds:g} s per case\n")
    print("| path | upserts/s | reads/s |\n|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
