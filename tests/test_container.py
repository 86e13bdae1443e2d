"""The container: the Dockerfile and compose.yaml read as text, then their commands run.

There is no Docker here, so the slow test runs the Dockerfile's own RUN lines (builder:
the wheels; image: a fresh virtual environment from them), then, as the image's
unprivileged uid, compose's migration command and its service command through the
image's ENTRYPOINT, with the secrets compose mounts as files, and the HEALTHCHECK command
until it passes (tests/support/dockerfile.py maps the image's paths into a temporary
directory). What the test adds to compose's environment is listed in ``TEST_ONLY``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import ROOT, leakcheck
from tests.support.databases import Databases
from tests.support.dockerfile import (
    USER_CREATION,
    Emulation,
    absolute_paths_in_commands,
    parse,
    python_for,
)
from token_vault import generate_key_spec
from token_vault.service.devprovider import DevProvider, free_port
from token_vault.service.settings import ServiceSettings
from token_vault.storage.migrate import head_revision

DOCKERFILE = parse((ROOT / "Dockerfile").read_text(encoding="utf-8"))
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SECRET_SETTINGS = {"DATABASE_URL", "KEYS", "OIDC_CLIENT_SECRET", "SESSION_SECRET"}
SETTINGS = {f"TOKEN_VAULT_{name.upper()}" for name in ServiceSettings.model_fields}
CALLER = ("billing-service", secrets.token_urlsafe(24))


def _final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in DOCKERFILE.final.all("ENV"):
        for item in instruction.text.split():
            name, _, value = item.partition("=")
            env[name] = value.strip('"')
    return env


def _user() -> tuple[int, int]:
    uid, _, gid = DOCKERFILE.final.one("USER").text.partition(":")
    return int(uid), int(gid)


def test_the_image_is_built_in_two_stages_from_python_slim() -> None:
    builder, final = DOCKERFILE.stages
    assert builder.name == "builder"
    assert builder.image == final.image
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", final.image)
    assert [c.text.split()[0] for c in final.all("COPY")] == ["--from=builder"]
    assert "pip wheel" in builder.one("RUN").text
    # No compilers or build tools in the final image: nothing installed but the wheels.
    for run in final.all("RUN"):
        assert not re.search(r"apt-get|apk |gcc|build-essential|pip wheel", run.text)
        assert "--no-index" in run.text or USER_CREATION.match(run.text)


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck_on_healthz() -> None:
    uid, gid = _user()
    assert uid != 0
    assert gid != 0
    creation = [r.text for r in DOCKERFILE.final.all("RUN") if USER_CREATION.match(r.text)]
    assert len(creation) == 1
    assert f"--uid {uid}" in creation[0]
    flags, check = DOCKERFILE.healthcheck()
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)
    assert "/healthz" in " ".join(check)
    assert DOCKERFILE.final.one("ENTRYPOINT").exec_form() == ["token-vault"]
    assert DOCKERFILE.final.one("CMD").exec_form() == ["serve"]


def test_the_image_binds_every_interface_and_reads_no_env_file() -> None:
    env = _final_env()
    assert env["TOKEN_VAULT_HOST"] == "0.0.0.0"  # noqa: S104 - the point of the setting
    assert {name for name in env if name.startswith("TOKEN_VAULT_")} <= SETTINGS
    assert DOCKERFILE.final.all("WORKDIR")[-1].text not in ("/", "/tmp")
    assert ".env" not in {p.name for p in ROOT.iterdir()} or "/.env" in _dockerignore()


def test_the_dockerfiles_commands_name_no_path_the_emulation_cannot_map() -> None:
    assert absolute_paths_in_commands(DOCKERFILE) == []


def _dockerignore() -> str:
    return (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = set(_dockerignore().split())
    assert {".venv", ".git", "var", "*.db", ".env", "**/node_modules"} <= ignored


def test_compose_runs_the_database_then_the_migration_once_then_the_service() -> None:
    assert set(SERVICES) == {"db", "migrate", "token-vault"}
    db, migrate, vault = SERVICES["db"], SERVICES["migrate"], SERVICES["token-vault"]
    assert db["image"].startswith("postgres:")
    assert "healthcheck" in db
    assert migrate["build"] == "."
    assert migrate["image"] == vault["image"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert vault["command"] == DOCKERFILE.final.one("CMD").exec_form()
    assert vault["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}


@pytest.mark.parametrize("name", ["migrate", "token-vault"])
def test_compose_sets_documented_settings_and_secrets_only_as_files(name: str) -> None:
    service = SERVICES[name]
    for variable, value in service["environment"].items():
        assert variable in SETTINGS, variable
        assert variable.removeprefix("TOKEN_VAULT_") not in SECRET_SETTINGS, variable
        if variable.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in service["secrets"], variable
            assert secret in COMPOSE["secrets"], variable


def test_the_service_gets_every_secret_it_needs_from_a_file() -> None:
    variables = set(SERVICES["token-vault"]["environment"])
    assert {f"TOKEN_VAULT_{name}_FILE" for name in SECRET_SETTINGS} <= variables


# -- the commands, run ---------------------------------------------------------------------

TEST_ONLY = {
    # The provider and the service run on loopback over plain http here; the image gets
    # an https issuer and public URL.
    "TOKEN_VAULT_INSECURE_HTTP": "1",
    # Which caller may do what is the deployment's own policy (closed by default): here
    # the test's service account may read.
    "TOKEN_VAULT_CALLER_POLICY": '{"callers": {"billing-service": '
    '{"actions": ["read", "token"], "users": "*"}}}',
}


def _interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's ``${NAME:?message}`` (required) and ``${NAME:-default}``."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if kind == ":?":
            assert name in given, f"compose requires {name}: {rest}"
            return given[name]
        return given.get(name, rest)

    return re.sub(r"\$\{(\w+)(:\?|:-)([^}]*)\}", one, str(value))


def _compose_env(name: str, given: dict[str, str]) -> dict[str, str]:
    env = SERVICES[name]["environment"]
    return {variable: _interpolate(value, given) for variable, value in env.items()}


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory every uid can read (pytest's tmp_path is private to this user)."""
    root = Path(tempfile.mkdtemp(prefix="token-vault-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_healthy(emulation: Emulation, state: Any, env: dict[str, str], server: Any) -> float:
    _, check = DOCKERFILE.healthcheck()
    started = time.monotonic()
    while time.monotonic() - started < 60:
        assert server.poll() is None, server.communicate()[1][-3000:]
        if emulation.run(state, check, env=env, timeout=30).returncode == 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError("the HEALTHCHECK command never passed")


@pytest.mark.slow
def test_the_images_commands_build_migrate_and_serve(
    image_root: Path, databases: Databases
) -> None:
    version = re.match(r"python:(\d+\.\d+)", DOCKERFILE.final.image)
    assert version is not None
    base = getattr(sys, "_base_executable", sys.executable)
    named = f"python{version[1]}"
    candidates = [base, named, f"/usr/local/bin/{named}", f"/usr/bin/{named}"]
    python = python_for(_user(), version[1], candidates)
    emulation = Emulation(DOCKERFILE, context=ROOT, root=image_root, python=python)
    image = emulation.build()
    assert not image.host("/wheels").exists()
    installed = emulation.run(image, ["pip", "list", "--format=freeze"]).stdout
    assert "oidc-token-vault==" in installed
    assert not re.search(r"(?im)^(build|hatchling|wheel)==", installed)

    web_secret = secrets.token_urlsafe(32)
    files = {
        "database_url": databases.fresh("postgresql", migrated=False),
        "vault_keys": generate_key_spec(),
        "oidc_client_secret": web_secret,
        "session_secret": secrets.token_urlsafe(48),
    }
    mounted = image.host("/run/secrets")
    mounted.mkdir(parents=True)
    for secret, value in files.items():
        leakcheck.remember_secret(value)
        (mounted / secret).write_text(value + "\n")
        (mounted / secret).chmod(0o644)
    entrypoint = DOCKERFILE.final.one("ENTRYPOINT").exec_form()

    migrated = emulation.run(
        image, [*entrypoint, *SERVICES["migrate"]["command"]], env=_compose_env("migrate", {})
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip().endswith(f"at revision {head_revision()}")

    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    clients = [
        {
            "client_id": "token-vault",
            "client_secret": web_secret,
            "redirect_uris": [f"{public_url}/auth/callback"],
            "post_logout_redirect_uris": [f"{public_url}/"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        },
        {"client_id": CALLER[0], "client_secret": CALLER[1], "grant_types": ["client_credentials"]},
    ]
    with DevProvider(clients=clients, test_hooks=False) as provider:
        given = {"TOKEN_VAULT_PUBLIC_URL": public_url, "TOKEN_VAULT_OIDC_ISSUER": provider.issuer}
        env = {**_compose_env("token-vault", given), **TEST_ONLY, "TOKEN_VAULT_PORT": str(port)}
        server = emulation.start(image, [*entrypoint, *SERVICES["token-vault"]["command"]], env=env)
        try:
            _wait_healthy(emulation, image, env, server)
            if os.getuid() == 0:  # root here: the service runs as the image's uid
                status = Path(f"/proc/{server.pid}/status").read_text()
                assert f"\nUid:\t{_user()[0]}\t" in status
            assert httpx.get(f"{public_url}/readyz").status_code == 200
            token = httpx.post(
                provider.token_endpoint,
                data={"grant_type": "client_credentials", "scope": "vault:read"},
                auth=CALLER,
            ).json()["access_token"]
            listed = httpx.get(
                f"{public_url}/v1/users/alice/tokens",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert (listed.status_code, listed.json()) == (200, {"user_id": "alice", "entries": []})
        finally:
            server.send_signal(signal.SIGTERM)
            _, log = server.communicate(timeout=30)
    # uvicorn shuts down cleanly, then ends by the signal it was sent (as `docker stop` sees).
    assert server.returncode in (0, -signal.SIGTERM), log[-3000:]
    assert "Application shutdown complete" in log
    assert f"Uvicorn running on http://0.0.0.0:{port}" in log
    assert "Warning" not in log
    for value in files.values():
        assert value not in log
    if os.getuid() == 0:
        assert not any(p.stat().st_uid == _user()[0] for p in image_root.rglob("*"))
