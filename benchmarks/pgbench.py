"""The limit: ``pgbench`` running the vault's own SQL text, prepared, random user each time.

The statement is taken from :mod:`token_vault.storage.postgres` and each ``$n`` becomes a
pgbench variable (``:uid`` from ``\\set uid random(1, N)``, the rest fixed with ``-D``).
pgbench numbers the placeholders itself, one per occurrence, so ``$8`` written twice in
the vault's text is sent twice; the statement is otherwise the same text.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.workload import Payload, Run, cpu_seconds, stamp
from token_vault.storage.postgres import (
    SELECT_REFRESH_TOKEN,
    SELECT_USER_TOKENS_AND_NOW,
    UPSERT_REFRESH_TOKEN,
)

__all__ = ["PgbenchTarget", "pgbench_script", "run_pgbench"]

# What each of the vault's parameters is called in the pgbench script.
UPSERT_VARIABLES = {
    1: "id",
    2: "uid",
    3: "ciphertext",
    4: "nonce",
    5: "key_id",
    6: "expires_at",
    7: "session_state",
    8: "metadata",
    9: "now",
    10: "stamp",
    # No access token comes with the refresh token here ($11-$14), as the vault sends.
    11: "NULL",
    12: "NULL",
    13: "NULL",
    14: "NULL",
}
SELECT_VARIABLES = {1: "uid"}
# What each case name runs: the statement and its parameters.
STATEMENTS = {
    "upsert": (UPSERT_REFRESH_TOKEN, UPSERT_VARIABLES),
    "select": (SELECT_REFRESH_TOKEN, SELECT_VARIABLES),
    "state": (SELECT_USER_TOKENS_AND_NOW, SELECT_VARIABLES),
}


@dataclass(frozen=True, slots=True)
class PgbenchTarget:
    """Where pgbench connects: the same TCP address and user as the vault."""

    bindir: Path
    host: str
    port: int
    user: str
    password: str
    database: str


def pgbench_script(sql: str, variables: dict[int, str], users: int) -> str:
    """A pgbench script: pick a random user, then run ``sql`` with ``:name`` parameters
    (a parameter named ``NULL`` is written as the literal)."""

    def parameter(match: re.Match[str]) -> str:
        name = variables[int(match.group(1))]
        return name if name == "NULL" else f":{name}"

    text = re.sub(r"\$(\d+)", parameter, sql.strip())
    return f"\\set uid random(1, {users})\n{text};\n"


def upsert_definitions(payload: Payload) -> dict[str, str]:
    """The fixed parameters, as text: the same sizes the vault sends."""
    ciphertext, nonce, key_id = payload.sealed_row("pgbench")
    now = datetime.now(UTC)
    return {
        "id": "00000000-0000-4000-8000-000000000000",
        "ciphertext": "\\x" + ciphertext.hex(),
        "nonce": "\\x" + nonce.hex(),
        "key_id": key_id,
        "expires_at": payload.expires_at.isoformat(),
        "session_state": payload.session_state,
        "metadata": payload.metadata_json,
        "now": now.isoformat(),
        "stamp": stamp(now),
    }


def run_pgbench(
    target: PgbenchTarget,
    *,
    statement: str,
    payload: Payload,
    users: int,
    callers: int,
    duration: float,
    warmup: float,
) -> Run:
    """Run pgbench for ``duration`` seconds; latencies come from its per-transaction log."""
    sql, variables = STATEMENTS[statement]
    script = pgbench_script(sql, variables, users)
    definitions = upsert_definitions(payload) if statement == "upsert" else {}
    with tempfile.TemporaryDirectory(prefix="token-vault-pgbench-") as tmp:
        script_path = Path(tmp) / f"{statement}.sql"
        script_path.write_text(script)
        if warmup > 0:
            _pgbench(target, script_path, definitions, callers, warmup, log_prefix=None)
        prefix = str(Path(tmp) / "latency")
        cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
        output = _pgbench(target, script_path, definitions, callers, duration, log_prefix=prefix)
        cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
        latencies = [
            int(line.split()[2]) * 1000
            for log in Path(tmp).glob("latency.*")
            for line in log.read_text().splitlines()
            if line.strip()
        ]
    processed = _field(output, r"number of transactions actually processed: (\d+)")
    failed = re.search(r"number of failed transactions: (\d+)", output)
    if failed and int(failed.group(1)):
        raise RuntimeError(f"pgbench reported failed transactions:\n{output}")
    tps = float(_field(output, r"tps = ([0-9.]+) \(without initial connection time\)"))
    return Run(int(processed), int(processed) / tps if tps else 0.0, latencies, cpu)


def _pgbench(
    target: PgbenchTarget,
    script: Path,
    definitions: dict[str, str],
    callers: int,
    seconds: float,
    *,
    log_prefix: str | None,
) -> str:
    command = [
        str(target.bindir / "pgbench"),
        "--no-vacuum",
        "--protocol=prepared",
        f"--file={script}",
        f"--client={callers}",
        f"--jobs={min(callers, os.cpu_count() or 1)}",
        f"--time={max(1, round(seconds))}",
        f"--host={target.host}",
        f"--port={target.port}",
        f"--username={target.user}",
    ]
    for name, value in definitions.items():
        command.append(f"--define={name}={value}")
    if log_prefix is not None:
        command += ["--log", f"--log-prefix={log_prefix}"]
    command.append(target.database)
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": target.password},
        cwd=script.parent,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def _field(output: str, pattern: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"unexpected pgbench output (no {pattern!r}):\n{output}")
    return match.group(1)
