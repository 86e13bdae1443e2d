"""The package as users get it: the sdist and the wheel built (the wheel from the sdist),
the wheel installed with each extra set into a fresh virtual environment outside the
checkout, and what that set promises run there, from an empty directory.

core: the library on SQLite, `db upgrade`, `keys generate`, and clear errors for the rest;
postgres: migrations and the library on PostgreSQL; oidc: the sign-in names import;
service: the quickstart's three commands (serve --dev, a headless sign-in through the dev
provider, the service-account command it prints); all: everything imports, pip check.
Nothing of the checkout is on the path: no PYTHONPATH, no TOKEN_VAULT_* variable.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT
from tests.support.databases import Databases
from token_vault import __version__
from token_vault.extra import DISTRIBUTION, MODULES, install_command
from token_vault.service.devprovider import free_port, login
from token_vault.storage.migrate import head_revision

HEAD = head_revision()

pytestmark = pytest.mark.slow

KEYS = "primary=k1,k1=" + "A" * 43 + "="
NOT_IN_CORE = {"asyncpg", "authlib", "fastapi", "greenlet", "httpx", "prometheus-client", "uvicorn"}
STORE_AND_READ = """
import asyncio, os, sys
from datetime import UTC, datetime, timedelta
from token_vault import Keyring, TokenVault

async def main():
    keyring = Keyring.from_spec(os.environ["TOKEN_VAULT_KEYS"])
    async with await TokenVault.open(os.environ["TOKEN_VAULT_DATABASE_URL"], keyring) as vault:
        later = datetime.now(UTC) + timedelta(days=1)
        await vault.upsert_refresh_token("alice", "rt-from-the-wheel", later)
        print((await vault.get_refresh_token("alice")).token)

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Dist:
    sdist: Path
    wheel: Path
    wheelhouse: Path  # the wheel and every wheel `[all]` needs: installs run offline


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    # One resolution against the index for the whole set (and pip's cache); each venv
    # then installs only from these files, so each resolves its extra from the metadata.
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    pinned = ["-c", str(ROOT / "constraints.txt"), "--wheel-dir", str(wheelhouse)]
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *pinned, f"{wheel}[all]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    return Dist(sdist, wheel, wheelhouse)


class Venv:
    """A fresh virtual environment with the wheel installed, used from an empty directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir(parents=True)
        done = subprocess.run(
            [sys.executable, "-m", "venv", str(root / "venv")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        self.bin = root / "venv" / "bin"
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TOKEN_VAULT_", "PYTHON", "VIRTUAL_ENV"))
        }
        self.env = {**clean, "PATH": f"{self.bin}{os.pathsep}{clean.get('PATH', '')}"}

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.work,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def install(self, requirement: str, wheelhouse: Path) -> None:
        offline = ["--no-index", "--find-links", str(wheelhouse), "--no-compile"]
        done = self.run("python", "-m", "pip", "install", "-q", *offline, requirement)
        assert done.returncode == 0, done.stderr[-3000:]

    def installed(self) -> set[str]:
        done = self.run("python", "-m", "pip", "list", "--format=freeze")
        return {line.split("==")[0].lower() for line in done.stdout.splitlines()}


def _venv(tmp_path: Path, dist: Dist, extras: str = "") -> Venv:
    venv = Venv(tmp_path)
    venv.install(f"{dist.wheel}[{extras}]" if extras else str(dist.wheel), dist.wheelhouse)
    checked = venv.run("python", "-m", "pip", "check")
    assert checked.returncode == 0, checked.stdout
    imported = venv.run("python", "-c", "import token_vault; print(token_vault.__file__)")
    assert imported.stdout.startswith(str(venv.root)), imported.stdout + imported.stderr
    return venv


def test_the_sdist_and_the_wheel_hold_what_they_should(dist: Dist) -> None:
    assert dist.wheel.name == f"oidc_token_vault-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"oidc_token_vault-{__version__}.dist-info/METADATA").decode()
    for shipped in ("server.mjs", "package.json", "package-lock.json"):
        assert f"token_vault/service/devprovider_node/{shipped}" in names
    assert "token_vault/py.typed" in names
    assert f"oidc_token_vault-{__version__}.dist-info/licenses/LICENSE" in names
    assert any(n.startswith(f"token_vault/storage/migrations/versions/{HEAD}") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "node_modules/" in n]
    assert f"Name: {DISTRIBUTION}\n" in metadata
    assert "License-Expression: Apache-2.0\n" in metadata
    extras = set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE))
    assert extras == {*MODULES, "all", "dev"}
    with tarfile.open(dist.sdist) as sdist:
        files = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "Dockerfile", "compose.yaml"} <= files
    assert {"docs/quickstart.md", "constraints.txt", "tests/test_packaging.py"} <= files


def test_the_core_alone_runs_the_library_on_sqlite_migrations_and_keys(
    tmp_path: Path, dist: Dist
) -> None:
    venv = _venv(tmp_path, dist)
    assert not venv.installed() & NOT_IN_CORE
    version = venv.run("token-vault", "--version")
    assert version.stdout == f"token-vault {__version__}\n"
    generated = venv.run("token-vault", "keys", "generate")
    assert generated.stdout.startswith("TOKEN_VAULT_KEYS=primary=")
    env = {
        "TOKEN_VAULT_DATABASE_URL": "sqlite:///vault.db",
        "TOKEN_VAULT_KEYS": generated.stdout.strip().partition("=")[2],
    }
    upgraded = venv.run("token-vault", "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    stored = venv.run("python", "-c", STORE_AND_READ, env=env)
    assert stored.stdout == "rt-from-the-wheel\n", stored.stderr
    assert venv.run("token-vault", "stats", "--json", env=env).returncode == 0

    serve = venv.run("token-vault", "serve")
    assert serve.returncode == 3
    assert install_command("service") in serve.stderr
    postgres = {"TOKEN_VAULT_DATABASE_URL": "postgresql://vault:pw@127.0.0.1:1/vault"}
    on_postgres = venv.run("token-vault", "db", "upgrade", env=postgres)
    assert on_postgres.returncode == 3
    assert install_command("postgres") in on_postgres.stderr
    oidc = venv.run("python", "-c", "from token_vault import RelyingParty")
    assert install_command("oidc") in oidc.stderr
    assert "MissingExtraError" in oidc.stderr


def test_postgres_runs_migrations_and_the_library_on_postgresql(
    tmp_path: Path, dist: Dist, databases: Databases
) -> None:
    venv = _venv(tmp_path, dist, "postgres")
    assert {"asyncpg", "greenlet"} <= venv.installed()
    env = {"TOKEN_VAULT_DATABASE_URL": databases.fresh("postgresql", migrated=False)}
    env["TOKEN_VAULT_KEYS"] = KEYS
    upgraded = venv.run("token-vault", "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    stored = venv.run("python", "-c", STORE_AND_READ, env=env)
    assert stored.stdout == "rt-from-the-wheel\n", stored.stderr


def test_oidc_brings_the_sign_in_names_and_not_the_service(tmp_path: Path, dist: Dist) -> None:
    venv = _venv(tmp_path, dist, "oidc")
    assert not venv.installed() & {"fastapi", "uvicorn", "asyncpg"}
    names = "from token_vault import AccessTokens, OpenIDProvider, RelyingParty"
    assert venv.run("python", "-c", names).returncode == 0
    serve = venv.run("token-vault", "serve")
    assert (serve.returncode, install_command("service") in serve.stderr) == (3, True)


def _quickstart_service_commands() -> list[str]:
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    section = text.split("## The service in 3 commands", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.strip().splitlines()


def test_the_quickstart_service_commands_are_the_ones_this_test_runs() -> None:
    assert _quickstart_service_commands() == [
        "python3 -m venv .venv && . .venv/bin/activate",
        f"pip install '{DISTRIBUTION}[service]'",
        "token-vault serve --dev",
    ]


@dataclass(frozen=True, slots=True)
class DevServer:
    venv: Venv
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    cache: Path


@pytest.fixture
def dev_server(tmp_path: Path, dist: Dist) -> Iterator[DevServer]:
    """The quickstart's commands: a fresh venv, the wheel for the index, `serve --dev`."""
    venv = _venv(tmp_path, dist, "service")
    port = free_port()
    cache = tmp_path / "cache"  # empty: the npm packages are installed on first use
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["token-vault", "serve", "--dev"],
            cwd=venv.work,
            env={**venv.env, "TOKEN_VAULT_PORT": str(port), "TOKEN_VAULT_CACHE_DIR": str(cache)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield DevServer(venv, process, f"http://127.0.0.1:{port}", log, cache)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


def test_service_runs_the_quickstart_serve_dev_sign_in_and_api(dev_server: DevServer) -> None:
    base, log = dev_server.base_url, dev_server.log
    deadline = time.monotonic() + 180  # the first use installs the npm packages
    while True:
        assert dev_server.process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"serve --dev did not answer:\n{log.read_text()}"
        time.sleep(0.2)
    page = httpx.get(f"{base}/")
    assert (page.status_code, "Sign in" in page.text) == (200, True)

    with httpx.Client(timeout=30.0, follow_redirects=False) as browser:
        start = browser.get(f"{base}/auth/login")
        at_callback = login(browser, start.headers["location"], "alice")
        assert browser.get(at_callback.headers["location"]).status_code == 303
        assert "alice" in browser.get(f"{base}/").text

    # The service-account command it printed, run as printed.
    printed = log.read_text().split("try the API as a service account:\n", 1)[1]
    command = "\n".join(line.strip() for line in printed.splitlines()[:2])
    assert command.startswith("TOKEN=$(curl")
    answered = dev_server.venv.run("bash", "-euo", "pipefail", "-c", command, timeout=60)
    assert answered.returncode == 0, answered.stderr
    listed = json.loads(answered.stdout)
    assert listed["user_id"] == "alice"
    assert [entry["token_type"] for entry in listed["entries"]] == ["refresh"]

    dev_server.process.send_signal(signal.SIGINT)
    dev_server.process.wait(timeout=30)
    text = log.read_text()
    assert "Application shutdown complete" in text
    assert "dev provider: installing its npm packages (oidc-provider) into" in text
    assert "warning: generated a DEV encryption key" in text
    assert (dev_server.venv.work / "var" / "dev-keys").is_file()
    assert [p.name.split("-")[0] for p in dev_server.cache.glob("devprovider-*")] == ["devprovider"]
    assert not list((dev_server.venv.root / "venv").rglob("node_modules"))


def test_all_installs_every_part(tmp_path: Path, dist: Dist) -> None:
    venv = _venv(tmp_path, dist, "all")
    modules = "token_vault.service.app, token_vault.service.dev, token_vault.oidc.routes"
    done = venv.run("python", "-c", f"import {modules}; import token_vault.storage.postgres")
    assert done.returncode == 0, done.stderr
