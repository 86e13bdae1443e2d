"""`token-vault doctor` against a real provider and database: each check, each hint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET
from token_vault import generate_key_spec
from token_vault.service.devprovider import DevProvider


@pytest.fixture(scope="module")
def provider() -> Iterator[DevProvider]:
    with DevProvider(test_hooks=False) as running:
        yield running


def _env(provider: DevProvider, tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "TOKEN_VAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}",
        "TOKEN_VAULT_KEYS": generate_key_spec(),
        "TOKEN_VAULT_OIDC_ISSUER": provider.issuer,
        "TOKEN_VAULT_OIDC_CLIENT_ID": CLIENT_ID,
        "TOKEN_VAULT_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "TOKEN_VAULT_SESSION_SECRET": "s" * 16 + "e" * 16 + "x" * 8,
        "TOKEN_VAULT_PUBLIC_URL": "http://127.0.0.1:8123",
        # The dev provider's client secret is a known one, which production refuses.
        "TOKEN_VAULT_MODE": "dev",
    }
    return {**env, **overrides}


def _checks(output: str) -> dict[str, dict[str, object]]:
    report = json.loads(output)
    return {check["name"]: check for check in report["checks"]}


def test_a_working_configuration_passes_every_check(provider: DevProvider, tmp_path: Path) -> None:
    env = _env(provider, tmp_path)
    assert cli("db", "upgrade", env=env).returncode == 0
    result = cli("doctor", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = _checks(result.stdout)
    assert all(check["ok"] for check in checks.values())
    assert {"settings", "keys", "database", "discovery", "jwks", "client"} <= set(checks)
    assert checks["register redirect_uri"]["detail"] == "http://127.0.0.1:8123/auth/callback"
    text = cli("doctor", env=env)
    assert text.returncode == 0
    assert "all checks passed" in text.stdout


@pytest.mark.parametrize(
    ("overrides", "failing", "hint"),
    [
        ({"TOKEN_VAULT_OIDC_CLIENT_SECRET": "wrong-secret"}, "client", "CLIENT_SECRET"),
        ({"TOKEN_VAULT_OIDC_ISSUER": "{issuer}/"}, "discovery", "character for character"),
        ({"TOKEN_VAULT_KEYS": "primary=k1,k1=c2hvcnQ="}, "keys", "keys generate"),
        ({"TOKEN_VAULT_SESSION_SECRET": "too-short"}, "settings", ".env"),
    ],
)
def test_each_broken_setting_fails_its_check_with_a_hint(
    provider: DevProvider,
    tmp_path: Path,
    overrides: dict[str, str],
    failing: str,
    hint: str,
) -> None:
    env = _env(provider, tmp_path)
    assert cli("db", "upgrade", env=env).returncode == 0
    broken = {k: v.format(issuer=provider.issuer) for k, v in overrides.items()}
    result = cli("doctor", "--json", env={**env, **broken})
    assert result.returncode == 1
    failed = [c for c in json.loads(result.stdout)["checks"] if not c["ok"]]
    assert failing in {c["name"] for c in failed}
    assert any(hint in str(c["hint"]) for c in failed if c["name"] == failing)
    assert CLIENT_SECRET not in result.stdout + result.stderr


def test_a_database_behind_the_code_is_reported(provider: DevProvider, tmp_path: Path) -> None:
    result = cli("doctor", env=_env(provider, tmp_path))
    assert result.returncode == 1
    assert "FAIL database" in result.stdout
    assert "fix: " in result.stdout
