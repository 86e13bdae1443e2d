"""A local OpenID provider run as a child process: started, awaited, stopped.

Its output goes to an unlinked temporary file (a pipe that nobody reads would fill and
block the server), so :meth:`ProviderProcess.output` can show the tail when startup
fails. Used by dev mode's provider and by tests that run other providers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalProvider", "ProviderProcess", "ProviderProcessError", "StartStop", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class StartStop:
    """``with thing:`` starts it and stops it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProviderProcessError(RuntimeError):
    """The provider process did not start, or exited during startup."""


class ProviderProcess:
    """One child process serving OpenID discovery at ``discovery_url`` for ``issuer``."""

    def __init__(self, name: str, *, startup_timeout: float = 20.0) -> None:
        self.name = name
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_fd: int | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        discovery_url: str,
        issuer: str,
    ) -> None:
        """Start ``argv`` and wait (bounded) until discovery names ``issuer``."""
        if self._process is not None:
            raise ProviderProcessError(f"{self.name} already started")
        fd, log_path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
        Path(log_path).unlink()
        self._log_fd = fd
        try:
            self._process = subprocess.Popen(  # noqa: S603 - argv built by the caller
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
            )
            self._wait_ready(discovery_url, issuer)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, discovery_url: str, issuer: str) -> None:
        import httpx  # here, not at the top: PgCluster uses this module without the oidc extra

        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer"
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    code = None if self._process is None else self._process.returncode
                    raise ProviderProcessError(
                        f"{self.name} exited with {code} during startup:\n{self.output()}"
                    )
                try:
                    resp = http.get(discovery_url)
                    if resp.status_code == 200 and resp.json().get("issuer") == issuer:
                        return
                    last_error = f"HTTP {resp.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    last_error = type(exc).__name__
                time.sleep(0.1)
        raise ProviderProcessError(
            f"{self.name} not ready after {self.startup_timeout}s ({last_error}):\n{self.output()}"
        )

    def output(self, limit: int = 8000) -> str:
        """The tail of the process's combined stdout/stderr (for diagnostics)."""
        if self._log_fd is None:
            return ""
        size = os.fstat(self._log_fd).st_size
        start = max(0, size - limit)
        return os.pread(self._log_fd, size - start, start).decode("utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; close the output file."""
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None


class LocalProvider(StartStop):
    """An OpenID provider served by a child process on ``host:port``; subclasses say
    what the issuer is and how the process is started (see :meth:`_launch`)."""

    def __init__(self, name: str, *, host: str, port: int | None, startup_timeout: float) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.startup_timeout = startup_timeout
        self._process = ProviderProcess(name, startup_timeout=startup_timeout)

    @property
    def base_url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def issuer(self) -> str:
        raise NotImplementedError

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def running(self) -> bool:
        return self._process.running

    def _launch(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        """Start ``argv`` and wait until discovery names the issuer."""
        if self._process.running:
            raise ProviderProcessError(f"{self._process.name} already started")
        self._process.start(
            argv, cwd=cwd, env=env, discovery_url=self.discovery_url, issuer=self.issuer
        )

    def output(self, limit: int = 8000) -> str:
        """The tail of the process's combined stdout/stderr (for diagnostics)."""
        return self._process.output(limit)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self._process.stop(timeout)
