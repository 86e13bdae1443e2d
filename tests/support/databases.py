"""Fresh databases for a test: migrated (or empty), on PostgreSQL or SQLite."""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL
from token_vault.testing.pgcluster import PgCluster

BACKENDS = ["postgresql", "sqlite"]


class Databases:
    """Makes fresh, migrated (or empty) databases on either backend."""

    def __init__(self, cluster: PgCluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.tmp_path = tmp_path

    def fresh(self, dialect: str, *, migrated: bool = True) -> str:
        name = f"t_{secrets.token_hex(6)}"
        if dialect == "postgresql":
            template = "template_vault" if migrated else "template0"
            self.cluster.psql(f"CREATE DATABASE {name} TEMPLATE {template}", database="postgres")
            return self.cluster.url_for(name)
        url = f"sqlite:///{self.tmp_path / (name + '.db')}"
        if migrated:
            # A thread of its own, so this also works from inside a running event loop.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(asyncio.run, migrate.upgrade(DatabaseURL.parse(url))).result()
        return url
