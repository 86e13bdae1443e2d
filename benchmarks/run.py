"""Run every case side by side and write the table: ``python -m benchmarks.run --help``.

One throwaway PostgreSQL cluster (fsync on), one database seeded with one refresh row
per user. For each caller count, the runners of a case take turns: limit, vault, usual,
then the reverse order, ``--repeat`` times in all; the rate shown is the median of the
repetitions and the latencies are pooled. Every write case starts after ``VACUUM`` and
``CHECKPOINT`` so none inherits another's dirty pages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import asyncpg

from benchmarks.memory import __name__ as memory_module
from benchmarks.pgbench import PgbenchTarget, run_pgbench
from benchmarks.report import (
    MemoryPoint,
    Result,
    combine,
    generated_block,
    growth_case,
    machine_description,
    render,
    targets,
    write_markdown,
)
from benchmarks.sqlite_direct import run_sqlite_direct
from benchmarks.usual import UsualWay
from benchmarks.workload import (
    Batches,
    Payload,
    Run,
    drive_tasks,
    load_generated_rows,
    seed_postgres,
    seed_sqlite,
)
from token_vault import TokenVault
from token_vault.storage import migrate
from token_vault.storage.coalesce import BatchCounts
from token_vault.storage.connections import ConnectionPool
from token_vault.storage.postgres import PostgresBackend
from token_vault.storage.sqlite import connect_sqlite
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

__all__ = ["Config", "main"]

# Realistic for a small production box: durability on, a larger buffer cache, and room
# for WAL so a 10-second case is not cut by a forced checkpoint.
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "2GB",
    "max_wal_size": "4GB",
}


@dataclass(frozen=True, slots=True)
class Config:
    users: int
    duration: float
    warmup: float
    clients: list[int]
    repeat: int
    growth: bool
    growth_rows: int
    memory_upserts: int
    output: Path
    json_path: Path | None
    loop: str
    command: str


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    """The cluster, the payload and the timing knobs every case shares."""

    def __init__(self, cluster: PgCluster, payload: Payload, config: Config) -> None:
        self.cluster = cluster
        self.payload = payload
        self.config = config
        self.results: list[Result] = []

    def pgbench_target(self, database: str) -> PgbenchTarget:
        c = self.cluster
        return PgbenchTarget(c.bindir, "127.0.0.1", c.port, c.user, c.password, database)

    async def settle(self, dsn: str) -> None:
        """VACUUM and CHECKPOINT, so each case starts from the same clean state."""
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("VACUUM auth_vault")
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()

    async def pgbench(self, database: str, statement: str, users: int, callers: int) -> Run:
        c = self.config
        return await asyncio.to_thread(
            run_pgbench,
            self.pgbench_target(database),
            statement=statement,
            payload=self.payload,
            users=users,
            callers=callers,
            duration=c.duration,
            warmup=c.warmup,
        )

    async def open_vault(self, url: str, callers: int, *, coalesce: bool) -> TokenVault:
        """The vault as an application opens it; without ``coalesce``, on PostgreSQL, one
        that sends every call as its own statement (batches of one, one sender per
        connection): the vault before coalescing, side by side."""
        if coalesce or url.startswith("sqlite"):
            return await TokenVault.open(url, self.payload.keyring, pool_size=callers)
        pool = ConnectionPool(DatabaseURL.parse(url).asyncpg_dsn, size=callers)
        backend = PostgresBackend(pool, senders=callers, max_batch=1)
        return TokenVault(backend, self.payload.keyring)

    async def vault_upserts(
        self, url: str, users: int, callers: int, *, coalesce: bool = True
    ) -> Run:
        p = self.payload
        vault = await self.open_vault(url, callers, coalesce=coalesce)
        try:

            async def call(user_id: str) -> object:
                return await vault.upsert_refresh_token(
                    user_id, p.token, p.expires_at, p.session_state, p.metadata
                )

            return await self.drive_vault(vault, "upsert_refresh", call, users, callers)
        finally:
            await vault.close()

    async def vault_reads(
        self, url: str, users: int, callers: int, *, coalesce: bool = True
    ) -> Run:
        vault = await self.open_vault(url, callers, coalesce=coalesce)
        try:

            async def call(user_id: str) -> object:
                entry = await vault.get_refresh_token(user_id)
                if entry is None:
                    raise RuntimeError(f"user {user_id} has no refresh token")
                return entry

            return await self.drive_vault(vault, "fetch_refresh", call, users, callers)
        finally:
            await vault.close()

    async def vault_states(self, url: str, users: int, callers: int) -> Run:
        """The read behind a cached access token: the user's entries and the database's
        time, and the access token's state (``TokenVault.refresh_state``)."""
        vault = await self.open_vault(url, callers, coalesce=True)
        try:

            async def call(user_id: str) -> object:
                state = await vault.refresh_state(user_id)
                if state is None:
                    raise RuntimeError(f"user {user_id} has no entry")
                return state

            return await self.drive_vault(vault, "fetch_for_refresh", call, users, callers)
        finally:
            await vault.close()

    async def drive_vault(
        self,
        vault: TokenVault,
        statement: str,
        call: Callable[[str], Awaitable[object]],
        users: int,
        callers: int,
    ) -> Run:
        """Drive ``call`` and record how the timed part's calls were sent: per statement
        on PostgreSQL, per commit on SQLite."""
        name = statement if vault.dialect == "postgresql" else "transaction"
        before = BatchCounts()

        def timed() -> None:
            nonlocal before
            before = vault.batch_counts()[name]

        c = self.config
        run = await drive_tasks(
            call, callers=callers, users=users, duration=c.duration, warmup=c.warmup, timed=timed
        )
        run.batches = batches_between(before, vault.batch_counts()[name])
        return run

    async def usual_upserts(self, dsn: str, users: int, callers: int) -> Run:
        p = self.payload
        usual = UsualWay.open(dsn, p, pool_size=callers)
        try:

            async def call(user_id: str) -> object:
                return await usual.upsert_refresh_token(
                    user_id, p.token, p.expires_at, p.session_state, p.metadata
                )

            return await self.drive(call, users, callers)
        finally:
            await usual.close()

    async def drive(
        self, call: Callable[[str], Awaitable[object]], users: int, callers: int
    ) -> Run:
        c = self.config
        return await drive_tasks(
            call, callers=callers, users=users, duration=c.duration, warmup=c.warmup
        )

    async def side_by_side(
        self,
        case: str,
        callers: int,
        runners: Mapping[str, Callable[[], Awaitable[Run]]],
        settle: Callable[[], Awaitable[None]],
    ) -> None:
        """Run each runner ``repeat`` times, alternating the order, then record the results."""
        runs: dict[str, list[Run]] = {name: [] for name in runners}
        for repetition in range(self.config.repeat):
            order = list(runners) if repetition % 2 == 0 else list(reversed(list(runners)))
            for name in order:
                await settle()
                run = await runners[name]()
                runs[name].append(run)
                log(f"{case:<32} {name:<7} {callers:>2} callers: {run.rate:>9,.0f} ops/s")
        for name in runners:
            self.results.append(combine(case, name, callers, runs[name]))


def batches_between(before: BatchCounts, after: BatchCounts) -> Batches:
    grew = [size for size, n in after.by_size.items() if n > before.by_size.get(size, 0)]
    return Batches(
        after.statements - before.statements, after.calls - before.calls, max(grew, default=0)
    )


async def postgres_cases(bench: Bench, dsn: str) -> None:
    users, database = bench.config.users, bench.cluster.database

    async def settle() -> None:
        await bench.settle(dsn)

    for callers in bench.config.clients:
        runners: dict[str, Callable[[], Awaitable[Run]]] = {
            "limit": partial(bench.pgbench, database, "upsert", users, callers),
            "vault": partial(bench.vault_upserts, dsn, users, callers),
            "usual": partial(bench.usual_upserts, dsn, users, callers),
        }
        if callers > 1:
            runners["plain"] = partial(bench.vault_upserts, dsn, users, callers, coalesce=False)
        await bench.side_by_side("upsert", callers, runners, settle)
    # pgbench's upserts wrote one pre-sealed ciphertext into every row; reseal each row
    # for its own user so the vault's reads decrypt.
    await seed_postgres(dsn, bench.payload, users)
    for callers in bench.config.clients:
        runners = {
            "limit": partial(bench.pgbench, database, "select", users, callers),
            "vault": partial(bench.vault_reads, dsn, users, callers),
        }
        if callers > 1:
            runners["plain"] = partial(bench.vault_reads, dsn, users, callers, coalesce=False)
        await bench.side_by_side("read", callers, runners, settle)
    for callers in bench.config.clients:
        await bench.side_by_side(
            "access-token state read",
            callers,
            {
                "limit": partial(bench.pgbench, database, "state", users, callers),
                "vault": partial(bench.vault_states, dsn, users, callers),
            },
            settle,
        )


async def sqlite_cases(bench: Bench, directory: Path) -> None:
    path = directory / "vault.db"
    url = f"sqlite:///{path}"
    await migrate.upgrade(DatabaseURL.parse(url))
    seed_sqlite(str(path), bench.payload, bench.config.users)
    c = bench.config

    async def settle() -> None:
        def checkpoint() -> None:
            with closing(connect_sqlite(str(path))) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await asyncio.to_thread(checkpoint)

    def direct(callers: int) -> Callable[[], Awaitable[Run]]:
        return lambda: asyncio.to_thread(
            run_sqlite_direct,
            str(path),
            bench.payload,
            users=c.users,
            callers=callers,
            duration=c.duration,
            warmup=c.warmup,
        )

    for callers in c.clients:
        await bench.side_by_side(
            "sqlite upsert",
            callers,
            {
                "direct": direct(callers),
                "vault": partial(bench.vault_upserts, url, c.users, callers),
            },
            settle,
        )


async def growth_cases(bench: Bench) -> list[MemoryPoint]:
    c, cluster, payload = bench.config, bench.cluster, bench.payload
    small, large = "growth_small", "growth_large"
    for name, rows in ((small, c.users), (large, c.growth_rows)):
        cluster.psql(f"CREATE DATABASE {name}", database="postgres")
        dsn = cluster.url_for(name)
        await migrate.upgrade(DatabaseURL.parse(dsn))
        started = time.perf_counter()
        await load_generated_rows(dsn, payload, 1, rows)
        log(f"loaded {rows:,} rows into {name} in {time.perf_counter() - started:.0f} s")
    for callers in c.clients:
        for name, rows in ((small, c.users), (large, c.growth_rows)):
            dsn = cluster.url_for(name)

            async def settle(dsn: str = dsn) -> None:
                await bench.settle(dsn)

            await bench.side_by_side(
                growth_case(rows),
                callers,
                {
                    "limit": partial(bench.pgbench, name, "upsert", rows, callers),
                    "vault": partial(bench.vault_upserts, dsn, rows, callers),
                },
                settle,
            )
    return await memory_case(bench, cluster.url_for(small))


async def memory_case(bench: Bench, dsn: str) -> list[MemoryPoint]:
    c = bench.config
    every = min(100_000, max(1, c.memory_upserts // 2))
    command = [
        sys.executable,
        "-m",
        memory_module,
        dsn,
        f"--upserts={c.memory_upserts}",
        f"--every={every}",
        "--callers=16",
        f"--users={c.users}",
    ]
    log(f"memory: {c.memory_upserts:,} upserts in a child process, RSS every {every:,}")
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
    points: list[MemoryPoint] = []
    assert process.stdout is not None
    async for line in process.stdout:
        report = json.loads(line)
        points.append(MemoryPoint(report["upserts"], report["rss_kib"], report["seconds"]))
        log(f"memory: {report}")
    if await process.wait() != 0:
        raise RuntimeError("the memory child process failed")
    return points


async def benchmark(config: Config) -> tuple[str, list[Result], list[MemoryPoint], str]:
    payload = Payload.make()
    cluster = PgCluster(settings=PG_SETTINGS)
    log("starting PostgreSQL")
    cluster.start()
    try:
        dsn = cluster.url
        await migrate.upgrade(DatabaseURL.parse(dsn))
        await seed_postgres(dsn, payload, config.users)
        pg_version = cluster.psql("SHOW server_version").strip()
        log(f"PostgreSQL {pg_version}: seeded {config.users:,} users")
        bench = Bench(cluster, payload, config)
        await postgres_cases(bench, dsn)
        with tempfile.TemporaryDirectory(prefix="token-vault-bench-sqlite-") as tmp:
            await sqlite_cases(bench, Path(tmp))
        memory = await growth_cases(bench) if config.growth else []
        return pg_version, bench.results, memory, cluster.psql("SHOW shared_buffers").strip()
    finally:
        cluster.stop()


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="The vault against pgbench, SQLAlchemy and sqlite3, side by side.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, about a second a case")
    parser.add_argument("--users", type=int, help="users seeded (default 10,000; smoke 200)")
    parser.add_argument("--duration", type=float, help="seconds per case (default 10)")
    parser.add_argument("--warmup", type=float, help="uncounted seconds first (default 2)")
    parser.add_argument("--clients", default="1,16", help="caller counts (default 1,16)")
    parser.add_argument("--repeat", type=int, help="repetitions per case (default 2)")
    parser.add_argument("--growth", action="store_true", help="also the 1,000,000-row cases")
    parser.add_argument("--growth-rows", type=int, default=1_000_000)
    parser.add_argument("--memory-upserts", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--json", type=Path, dest="json_path", help="also write results here")
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the Python runners (default uvloop, as `token-vault serve` uses)",
    )
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    return Config(
        users=args.users or (200 if smoke else 10_000),
        duration=args.duration or (1.0 if smoke else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.0 if smoke else 2.0),
        clients=[int(n) for n in str(args.clients).split(",") if n.strip()],
        repeat=args.repeat or (1 if smoke else 2),
        growth=bool(args.growth) and not smoke,
        growth_rows=args.growth_rows,
        memory_upserts=args.memory_upserts,
        output=args.output,
        json_path=args.json_path,
        loop=args.loop,
        command=shlex.join(["python", "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if config.loop == "uvloop":
        import uvloop

        pg_version, results, memory, shared_buffers = uvloop.run(benchmark(config))
    else:
        pg_version, results, memory, shared_buffers = asyncio.run(benchmark(config))
    checks = targets(results, config.clients, memory, config.growth_rows, config.users)
    table = render(results, checks)
    print(table)
    notes = [
        f"event loop of the Python runners: {config.loop}.",
        f"{config.users:,} users, {config.duration:g} s per case after {config.warmup:g} s of"
        f" warm-up, {config.repeat} repetition(s) in alternating order; ops/s is the median"
        " of the repetitions, p50/p99 pool every call of every repetition.",
    ]
    if config.growth and memory and memory[-1].upserts < 1_000_000:
        notes.append(f"memory measured over {memory[-1].upserts:,} upserts, not 1,000,000.")
    settings = {**PG_SETTINGS, "shared_buffers": shared_buffers}
    block = generated_block(
        machine_description(pg_version), settings, config.command, table, memory, notes
    )
    write_markdown(config.output, block)
    if config.json_path is not None:
        config.json_path.write_text(
            json.dumps(
                {
                    "results": [r.as_dict() for r in results],
                    "targets": [t.as_dict() for t in checks],
                    "memory": [asdict(m) for m in memory],
                },
                indent=2,
            )
        )
    log(f"wrote {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
