"""Results, the issue's targets, the table, the machine, and the ``BENCHMARKS.md`` block.

``BENCHMARKS.md`` keeps hand-written notes; a run only replaces the part between
``<!-- benchmark:begin -->`` and ``<!-- benchmark:end -->``.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.workload import Run

__all__ = [
    "BEGIN",
    "END",
    "MemoryPoint",
    "Result",
    "Target",
    "combine",
    "machine_description",
    "render",
    "targets",
    "write_markdown",
]

BEGIN = "<!-- benchmark:begin -->"
END = "<!-- benchmark:end -->"

RUNNERS = {
    "limit": "pgbench, same SQL",
    "vault": "TokenVault",
    "plain": "TokenVault, one statement per call",
    "usual": "SQLAlchemy ORM",
    "direct": "sqlite3, same SQL",
}
BASELINES = ("limit", "direct")


@dataclass(frozen=True, slots=True)
class Result:
    """One case at one caller count: the median rate over repetitions, pooled latencies."""

    case: str  # "upsert", "read", "sqlite upsert", "growth upsert 10,000 rows", ...
    runner: str  # a key of RUNNERS
    callers: int
    rates: tuple[float, ...]
    ops: int
    p50_ms: float
    p99_ms: float
    cpu_us_per_op: float  # the client's CPU time per operation (pgbench or this process)
    client_cores: float  # the client's CPU seconds per wall second
    calls_per_statement: float | None = None  # the vault: mean calls a statement carried
    largest_batch: int | None = None  # (on SQLite, calls per commit)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    upserts: int
    rss_kib: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets, with what this run measured."""

    name: str
    measured: float | None
    threshold: float
    at_least: bool  # True: measured >= threshold passes; False: measured <= threshold
    unit: str = "x"
    note: str = field(default="")

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "n/a"
        ok = self.measured >= self.threshold if self.at_least else self.measured <= self.threshold
        return "PASS" if ok else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def combine(case: str, runner: str, callers: int, runs: list[Run]) -> Result:
    latencies = sorted(latency for run in runs for latency in run.latencies_ns)
    batches = [run.batches for run in runs if run.batches is not None]
    statements = sum(b.statements for b in batches)
    return Result(
        case=case,
        runner=runner,
        callers=callers,
        rates=tuple(run.rate for run in runs),
        ops=sum(run.ops for run in runs),
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
        cpu_us_per_op=sum(r.client_cpu for r in runs) / max(1, sum(r.ops for r in runs)) * 1e6,
        client_cores=sum(r.client_cpu for r in runs) / max(1e-9, sum(r.seconds for r in runs)),
        calls_per_statement=sum(b.calls for b in batches) / statements if statements else None,
        largest_batch=max(b.largest for b in batches) if batches else None,
    )


def _find(results: list[Result], case: str, runner: str, callers: int) -> Result | None:
    for result in results:
        if (result.case, result.runner, result.callers) == (case, runner, callers):
            return result
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _rate(results: list[Result], case: str, runner: str, callers: int) -> float | None:
    found = _find(results, case, runner, callers)
    return found.rate if found else None


def _vs_baseline(results: list[Result], case: str, callers: int) -> float | None:
    baseline = "direct" if case.startswith("sqlite") else "limit"
    return _ratio(_rate(results, case, "vault", callers), _rate(results, case, baseline, callers))


# The targets that this script cannot measure: what measures them, or why not.
NOT_MEASURED_HERE = (
    ("token handout with the strict audit on >= 0.70x the same without audit", 0.70, True),
    ("HTTP cached access token, 1 worker >= 0.60x the floor app", 0.60, True),
    ("HTTP, 2 workers >= 1.3x 1 worker", 1.30, True),
    ("refresh fan-in: provider refreshes == users, 0 errors", 1.0, True),
)


def targets(
    results: list[Result],
    clients: list[int],
    memory: list[MemoryPoint],
    growth_rows: int,
    small_rows: int,
) -> list[Target]:
    """The issue's targets, computed from this run's results (``n/a`` when not measured).

    Against pgbench running the same single-row statement: 1 caller >= 0.80x, more
    callers >= 1.0x; p99 at more callers <= 1.5x pgbench's; SQLite against direct
    ``sqlite3`` committing each statement: 1 caller >= 0.60x, more >= 1.5x.
    """
    out: list[Target] = []
    for case in ("upsert", "read"):
        for callers in clients:
            needed = 0.80 if callers == 1 else 1.0
            out.append(
                Target(
                    f"{case}: vault >= {needed:.2f}x pgbench, {callers} caller(s)",
                    _vs_baseline(results, case, callers),
                    needed,
                    at_least=True,
                )
            )
    for case in ("upsert", "read"):
        for callers in (n for n in clients if n > 1):
            vault = _find(results, case, "vault", callers)
            limit = _find(results, case, "limit", callers)
            out.append(
                Target(
                    f"{case}: vault p99 <= 1.5x pgbench p99, {callers} callers",
                    _ratio(vault.p99_ms if vault else None, limit.p99_ms if limit else None),
                    1.5,
                    at_least=False,
                )
            )
    for callers in clients:
        needed = 0.60 if callers == 1 else 1.5
        out.append(
            Target(
                f"SQLite upsert: vault >= {needed:.2f}x direct sqlite3, {callers} caller(s)",
                _vs_baseline(results, "sqlite upsert", callers),
                needed,
                at_least=True,
            )
        )
    for name, threshold, at_least in NOT_MEASURED_HERE:
        out.append(Target(name, None, threshold, at_least=at_least, note="not measured here"))
    large, small = growth_case(growth_rows), growth_case(small_rows)
    for callers in clients:
        vault_ratio = _ratio(
            _rate(results, large, "vault", callers), _rate(results, small, "vault", callers)
        )
        limit_ratio = _ratio(
            _rate(results, large, "limit", callers), _rate(results, small, "limit", callers)
        )
        out.append(
            Target(
                f"growth: vault rate at {growth_rows:,} rows >= 80% of at {small_rows:,}, "
                f"{callers} caller(s)",
                vault_ratio,
                0.80,
                at_least=True,
                note=f"pgbench's own ratio: {limit_ratio:.2f}" if limit_ratio else "",
            )
        )
    name = "growth: RSS after 1,000,000 upserts <= 110% of after 100,000"
    rss_ratio, rss_note = None, ""
    if len(memory) >= 2:
        first, last = memory[0], memory[-1]
        name = f"growth: RSS after {last.upserts:,} upserts <= 110% of after {first.upserts:,}"
        rss_ratio = _ratio(last.rss_kib, first.rss_kib)
        rss_note = f"{first.rss_kib / 1024:.1f} MiB -> {last.rss_kib / 1024:.1f} MiB"
    out.append(Target(name, rss_ratio, 1.10, at_least=False, note=rss_note))
    return out


def growth_case(rows: int) -> str:
    return f"growth upsert, {rows:,} rows"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(results: list[Result], checks: list[Target]) -> str:
    """The results and the targets as two Markdown tables (also fine in a terminal)."""
    lines = [
        "| case | runner | callers | ops/s | p50 ms | p99 ms | ops/s per repetition"
        " | vs limit | vs usual | calls per statement (mean, max) | client CPU µs/op"
        " | client cores used |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        baseline = "direct" if r.case.startswith("sqlite") else "limit"
        vs_limit = (
            _ratio(r.rate, _rate(results, r.case, baseline, r.callers))
            if r.runner not in BASELINES
            else None
        )
        vs_usual = (
            _ratio(r.rate, _rate(results, r.case, "usual", r.callers))
            if r.runner in ("vault", "plain")
            else None
        )
        batches = (
            f"{r.calls_per_statement:.1f}, {r.largest_batch}"
            if r.calls_per_statement is not None
            else "-"
        )
        reps = ", ".join(f"{rate:,.0f}" for rate in r.rates)
        lines.append(
            f"| {r.case} | {RUNNERS[r.runner]} | {r.callers} | {r.rate:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {reps} | {_fmt(vs_limit)} | {_fmt(vs_usual)} | "
            f"{batches} | {r.cpu_us_per_op:,.0f} | {r.client_cores:.2f} |"
        )
    lines += ["", "| target | measured | needed | result | note |", "|---|---:|---:|---|---|"]
    for t in checks:
        needed = f"{'>=' if t.at_least else '<='} {t.threshold:.2f}"
        lines.append(f"| {t.name} | {_fmt(t.measured)} | {needed} | {t.verdict} | {t.note} |")
    return "\n".join(lines) + "\n"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip()


def machine_description(pg_version: str) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    commit = _git("rev-parse", "--short", "HEAD")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load average (1, 5, 15 min) at the end": " ".join(_read("/proc/loadavg").split()[:3]),
        "commit": commit + (" (working tree has uncommitted changes)" if dirty else ""),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "sqlite": sqlite3.sqlite_version,
        "libraries": ", ".join(
            f"{name} {metadata.version(name)}" for name in ("asyncpg", "SQLAlchemy", "cryptography")
        ),
    }


def generated_block(
    machine: dict[str, str],
    settings: dict[str, str],
    command: str,
    table: str,
    memory: list[MemoryPoint],
    notes: list[str],
) -> str:
    lines = [BEGIN, "", "## Latest run", ""]
    lines += [f"- **{key}**: {value}" for key, value in machine.items()]
    lines.append("- **PostgreSQL settings**: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += [f"- **command**: `{command}`", "", table]
    if memory:
        lines += ["RSS of a fresh process upserting through the vault (16 callers):", ""]
        lines += ["| upserts | RSS MiB | seconds |", "|---:|---:|---:|"]
        lines += [f"| {m.upserts:,} | {m.rss_kib / 1024:.1f} | {m.seconds:.0f} |" for m in memory]
        lines.append("")
    lines += [f"- {note}" for note in notes]
    lines += ["", END]
    return "\n".join(lines) + "\n"


TEMPLATE = """# Benchmarks

The vault's refresh-token upsert and read against what the database itself does with the
same SQL, measured side by side in one run by `python -m benchmarks.run` (issue 3).

{block}"""


def write_markdown(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (or create the file around it)."""
    existing = path.read_text() if path.exists() else ""
    if BEGIN in existing and END in existing:
        head, _, rest = existing.partition(BEGIN)
        _, _, tail = rest.partition(END)
        path.write_text(head + block.rstrip("\n") + tail)
    else:
        path.write_text(TEMPLATE.format(block=block))
