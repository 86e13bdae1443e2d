"""A throwaway PgBouncer in front of a :class:`PgCluster`, for tests and benchmarks.

It listens on a free loopback port, forwards every database name to the cluster, and
runs as the cluster's unprivileged user (PgBouncer refuses to run as root). Its
configuration and user list live in a temporary directory that :meth:`PgBouncer.stop`
removes. Debian's ``pgbouncer`` package provides the binary (or set
``TOKEN_VAULT_PGBOUNCER_BIN``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal, Self

from token_vault.service.process import StartStop
from token_vault.testing.pgcluster import PgCluster, free_port, unprivileged_user

__all__ = ["PgBouncer", "find_pgbouncer"]

PoolMode = Literal["transaction", "session"]


def find_pgbouncer() -> Path:
    """The ``pgbouncer`` binary: ``$TOKEN_VAULT_PGBOUNCER_BIN``, the PATH, or Debian's."""
    configured = os.environ.get("TOKEN_VAULT_PGBOUNCER_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise FileNotFoundError(
            "pgbouncer not found; install Debian's `pgbouncer` package "
            "or set TOKEN_VAULT_PGBOUNCER_BIN"
        )
    return Path(found)


class PgBouncer(StartStop):
    """PgBouncer for ``cluster`` in ``pool_mode``, at most ``pool_size`` server
    connections per database; :meth:`url_for` gives the vault's URL through it."""

    def __init__(
        self,
        cluster: PgCluster,
        *,
        pool_mode: PoolMode = "transaction",
        pool_size: int = 20,
        max_client_conn: int = 1000,
    ) -> None:
        self.binary = find_pgbouncer()
        self.cluster = cluster
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = free_port()
        self._tmp: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def url_for(self, database: str) -> str:
        """The URL of ``database`` through PgBouncer, with ``?pgbouncer=<pool mode>``."""
        c = self.cluster
        return (
            f"postgresql://{c.user}:{c.password}@127.0.0.1:{self.port}/{database}"
            f"?pgbouncer={self.pool_mode}"
        )

    @property
    def version(self) -> tuple[int, ...]:
        """The binary's version, e.g. ``(1, 18, 0)``."""
        out = subprocess.run(  # noqa: S603 - the pgbouncer binary found above
            [str(self.binary), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"PgBouncer (\d+(?:\.\d+)*)", out)
        if match is None:
            raise RuntimeError(f"cannot read PgBouncer's version from {out!r}")
        return tuple(int(part) for part in match.group(1).split("."))

    def start(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix="token-vault-pgbouncer-"))
        owner = unprivileged_user()
        userlist = self._tmp / "userlist.txt"
        userlist.write_text(f'"{self.cluster.user}" "{self.cluster.password}"\n')
        userlist.chmod(0o600)
        ini = self._tmp / "pgbouncer.ini"
        ini.write_text(self._ini(userlist))
        if owner is not None:
            for path in (self._tmp, userlist, ini):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        log = self._tmp / "pgbouncer.log"
        with log.open("wb") as out:
            self._process = subprocess.Popen(  # noqa: S603 - the pgbouncer binary
                [str(self.binary), str(ini)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        deadline = time.monotonic() + 20
        while not self._accepts_connections():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"PgBouncer did not start:\n{tail}")
            time.sleep(0.05)
        return self

    def _ini(self, userlist: Path) -> str:
        return (
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.cluster.port}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {userlist}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\n"
            f"admin_users = {self.cluster.user}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log(self) -> str:
        """What PgBouncer wrote so far (its log goes to a file in its directory)."""
        if self._tmp is None:
            return ""
        return (self._tmp / "pgbouncer.log").read_text(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
