"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb, pg_ctl, a temp dir.

PostgreSQL refuses to run as root, so when this process is root the cluster is owned by,
and run as, the unprivileged ``postgres`` user (or ``nobody``).

:meth:`PgCluster.standby` makes a second cluster that streams the first one's WAL
(``pg_basebackup -R``); :meth:`PgCluster.crash` and :meth:`PgCluster.promote` are the
two halves of a failover.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from token_vault.service.process import StartStop

__all__ = ["PgCluster", "find_bindir", "free_port", "unprivileged_user"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unprivileged_user() -> pwd.struct_passwd | None:
    """Under root, the user servers run as (``postgres``, else ``nobody``); else ``None``.

    PostgreSQL and PgBouncer both refuse to run as root.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres or nobody) to run the server as")


def find_bindir() -> Path:
    """PostgreSQL's server binaries: ``$TOKEN_VAULT_PG_BINDIR``, Debian's, or the PATH."""
    configured = os.environ.get("TOKEN_VAULT_PG_BINDIR")
    if configured:
        return Path(configured)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError(
        "PostgreSQL server binaries not found; install Debian's `postgresql` package "
        "or set TOKEN_VAULT_PG_BINDIR"
    )


class PgCluster(StartStop):
    """Start with :meth:`start` (or ``with``); :attr:`url` is a ``postgresql://`` URL."""

    def __init__(
        self,
        *,
        settings: dict[str, str] | None = None,
        user: str = "vault",
        database: str = "vault",
    ) -> None:
        self.bindir = find_bindir()
        self.port = free_port()
        self.user = user
        self.database = database
        self.password = secrets.token_urlsafe(18)
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "max_connections": "300",
            "shared_buffers": "256MB",
            **(settings or {}),
        }
        self._tmp: Path | None = None
        self._owner: pwd.struct_passwd | None = None
        self._primary: PgCluster | None = None
        self.name = "primary"

    def standby(
        self, name: str = "standby1", *, settings: dict[str, str] | None = None
    ) -> PgCluster:
        """A cluster that, once started, streams this one's WAL (``pg_basebackup -R``)
        and reports itself as ``name``: the ``application_name`` that
        ``synchronous_standby_names`` on this cluster lists to make it synchronous."""
        replica = PgCluster(
            settings={**self.settings, **(settings or {})}, user=self.user, database=self.database
        )
        replica.password = self.password
        replica._primary = self
        replica.name = name
        return replica

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "data"

    def _run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        owner = self._owner
        return subprocess.run(  # noqa: S603 - fixed binaries of the PostgreSQL install
            [str(self.bindir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LC_ALL": "C.UTF-8",
                **(env or {}),
            },
        )

    @property
    def owner(self) -> pwd.struct_passwd | None:
        """The unprivileged user the cluster runs as (``None``: this process's user)."""
        return self._owner

    def start(self) -> Self:
        self._tmp = Path(tempfile.mkdtemp(prefix="token-vault-pg-"))
        self._owner = unprivileged_user()
        if self._owner is not None:
            os.chown(self._tmp, self._owner.pw_uid, self._owner.pw_gid)
        if self._primary is not None:
            self._copy_primary(self._primary)
        else:
            self._initdb()
        result = self._pg_ctl_start()
        if result.returncode != 0:
            log = (self._tmp / "server.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")
        if self._primary is None:
            self.psql(f"CREATE DATABASE {self.database}", database="postgres")
        return self

    def _copy_primary(self, primary: PgCluster) -> None:
        """``pg_basebackup -R``: a copy of the primary that starts as its standby."""
        connection = (
            f"host=127.0.0.1 port={primary.port} user={self.user} application_name={self.name}"
        )
        self._run(
            "pg_basebackup",
            "-D",
            str(self.data_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-d",
            connection,
            env={"PGPASSWORD": self.password},
        )

    def _initdb(self) -> None:
        assert self._tmp is not None
        pwfile = self._tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._owner:
            os.chown(pwfile, self._owner.pw_uid, self._owner.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()

    def psql(self, sql: str, *, database: str | None = None) -> str:
        """Run SQL with psql as the cluster's superuser; returns unaligned output."""
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(  # noqa: S603
            [
                str(self.bindir / "psql") if (self.bindir / "psql").exists() else "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database or self.database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return result.stdout

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        assert self._tmp is not None
        return self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self._tmp / "server.log"),
            "-o",
            self._options(),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )

    def _options(self) -> str:
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        return options + f" -p {self.port} -k {self._tmp}"

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart``; the log file keeps the server off pg_ctl's captured output."""
        assert self._tmp is not None
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self._tmp / "server.log"),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "restart",
        )

    def kill(self, timeout: float = 30.0) -> int:
        """SIGKILL the postmaster, as a crash would; returns its pid once it is gone."""
        pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return pid
            time.sleep(0.02)
        raise RuntimeError(f"postmaster {pid} did not die")

    def crash(self, timeout: float = 30.0) -> None:
        """SIGKILL the postmaster and every process it started at once, as a machine
        that lost power would (only the disk survives); returns once all are gone."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        pids = [postmaster, *_children(postmaster)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError("the killed server's processes did not die")
            time.sleep(0.02)

    def promote(self) -> None:
        """``pg_ctl promote``: this standby becomes a primary; returns once it accepts
        writes."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "promote")

    def start_again(self, timeout: float = 60.0) -> None:
        """``pg_ctl start`` on the existing data directory (after :meth:`kill`), retrying
        while the killed server's backends still hold its shared memory."""
        assert self._tmp is not None
        deadline = time.monotonic() + timeout
        while True:
            result = self._pg_ctl_start()
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start again: {result.stderr}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._tmp is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False
            )
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None


def _children(parent: int) -> list[int]:
    """The pids whose parent is ``parent`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
