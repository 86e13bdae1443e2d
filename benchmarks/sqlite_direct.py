"""SQLite's limit: Python's ``sqlite3`` running the vault's upsert statement directly.

The connection comes from :func:`token_vault.storage.sqlite.connect_sqlite`, so it has
the vault's pragmas (WAL, ``synchronous=FULL``) and the ``vault_merge_metadata``
function the statement calls. Parameters are pre-sealed once: no encryption here, as
with pgbench. Several callers share the one connection under a lock, since SQLite has
one writer (the vault funnels its callers to one thread the same way).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from benchmarks.workload import Payload, Run, drive_threads, sqlite_params
from token_vault.storage.sqlite import UPSERT_REFRESH_TOKEN, connect_sqlite

__all__ = ["run_sqlite_direct"]


def run_sqlite_direct(
    path: str, payload: Payload, *, users: int, callers: int, duration: float, warmup: float
) -> Run:
    connection = connect_sqlite(path, check_same_thread=False)
    lock = threading.Lock()
    fixed: tuple[Any, ...] = sqlite_params(payload.upsert_params("direct", datetime.now(UTC)))

    def upsert(user_id: str) -> object:
        params = (fixed[0], user_id, *fixed[2:])
        with lock:
            return connection.execute(UPSERT_REFRESH_TOKEN, params).fetchall()[0][0]

    try:
        return drive_threads(upsert, callers=callers, users=users, duration=duration, warmup=warmup)
    finally:
        connection.close()
