"""A child process that upserts through the vault and reports its memory as it goes.

``python -m benchmarks.memory URL --upserts N --every K --callers C --users U`` prints
one JSON line per ``K`` upserts: ``{"upserts": ..., "rss_kib": ..., "seconds": ...}``.
RSS is ``VmRSS`` from ``/proc/self/status`` after a full garbage collection; a fresh
process keeps the other cases' allocations out of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import resource
import sys
import time

from benchmarks.workload import Payload
from token_vault import TokenVault

__all__ = ["current_rss_kib", "main"]


def current_rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def upsert_and_measure(url: str, upserts: int, every: int, callers: int, users: int) -> None:
    payload = Payload.make()
    vault = await TokenVault.open(url, payload.keyring, pool_size=callers)
    done = 0
    started = time.perf_counter()
    rng = random.Random(11)

    async def caller(share: int) -> None:
        nonlocal done
        for _ in range(share):
            await vault.upsert_refresh_token(
                str(rng.randint(1, users)),
                payload.token,
                payload.expires_at,
                payload.session_state,
                payload.metadata,
            )
            done += 1

    try:
        while done < upserts:
            batch = min(every, upserts - done)
            shares = [batch // callers + (1 if i < batch % callers else 0) for i in range(callers)]
            await asyncio.gather(*(caller(share) for share in shares if share))
            gc.collect()
            report = {
                "upserts": done,
                "rss_kib": current_rss_kib(),
                "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(report), flush=True)
    finally:
        await vault.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("url")
    parser.add_argument("--upserts", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args(argv)
    asyncio.run(upsert_and_measure(args.url, args.upserts, args.every, args.callers, args.users))
    return 0


if __name__ == "__main__":
    sys.exit(main())
