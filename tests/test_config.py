"""Settings: every secret may come from a file (``TOKEN_VAULT_<NAME>_FILE``), read once,
refused clearly when unreadable, empty or set twice, and never echoed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.support import leakcheck
from tests.support.cli import cli
from token_vault import ConfigurationError, VaultSettings
from token_vault.service.settings import ServiceSettings

SECRETS = ["DATABASE_URL", "KEYS", "OIDC_CLIENT_SECRET", "SESSION_SECRET"]
# Secrets of optional parts, with a file twin too (not exercised one by one below).
OTHER_SECRETS = ["OIDC_INTROSPECTION_CLIENT_SECRET", "PKCS11_PIN", "WEBHOOK_SECRET"]
VALUES = {
    "DATABASE_URL": "postgresql://vault:{}@db:5432/vault",
    "KEYS": "primary=k1,k1=" + "A" * 43 + "=",
    "OIDC_CLIENT_SECRET": "{}",
    "SESSION_SECRET": "{}",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("TOKEN_VAULT_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env from the checkout


def _secret_in_file(tmp_path: Path, name: str) -> tuple[Path, str]:
    value = VALUES[name].format(secrets.token_urlsafe(24))
    leakcheck.remember_secret(value)
    path = tmp_path / name.lower()
    path.write_text(value + "\n")  # as `echo` or an editor writes it
    return path, value


@pytest.mark.parametrize("name", SECRETS)
def test_each_secret_is_read_from_its_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, value = _secret_in_file(tmp_path, name)
    monkeypatch.setenv(f"TOKEN_VAULT_{name}_FILE", str(path))
    settings = ServiceSettings()
    field = getattr(settings, name.lower())
    assert isinstance(field, SecretStr)
    assert field.get_secret_value() == value
    assert value not in repr(settings)


def test_every_secret_setting_has_a_file_twin() -> None:
    secret_fields = [
        name
        for name, field in ServiceSettings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    ]
    assert sorted(secret_fields) == sorted(n.lower() for n in SECRETS + OTHER_SECRETS)
    assert all(f"{name}_file" in ServiceSettings.model_fields for name in secret_fields)


def test_a_database_url_from_a_file_counts_as_set_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _secret_in_file(tmp_path, "DATABASE_URL")
    assert any("DATABASE_URL: set it" in p for p in ServiceSettings().problems())
    monkeypatch.setenv("TOKEN_VAULT_DATABASE_URL_FILE", str(path))
    assert not any("DATABASE_URL" in p for p in ServiceSettings().problems())


@pytest.mark.parametrize("name", SECRETS)
def test_a_secret_and_its_file_both_set_is_refused(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, value = _secret_in_file(tmp_path, name)
    monkeypatch.setenv(f"TOKEN_VAULT_{name}_FILE", str(path))
    monkeypatch.setenv(f"TOKEN_VAULT_{name}", value)
    with pytest.raises(ConfigurationError) as caught:
        ServiceSettings()
    assert str(caught.value) == (
        f"both TOKEN_VAULT_{name} and TOKEN_VAULT_{name}_FILE are set; set one of them"
    )


def test_an_unreadable_or_empty_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing"
    monkeypatch.setenv("TOKEN_VAULT_KEYS_FILE", str(missing))
    with pytest.raises(ConfigurationError, match="No such file or directory") as caught:
        VaultSettings()
    assert str(caught.value).startswith(f"cannot read TOKEN_VAULT_KEYS_FILE '{missing}'")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("TOKEN_VAULT_KEYS_FILE", str(empty))
    with pytest.raises(ConfigurationError, match=f"TOKEN_VAULT_KEYS_FILE '{empty}' is empty"):
        VaultSettings()


def test_the_command_line_says_which_file_and_exits_3(tmp_path: Path) -> None:
    unreadable = {"TOKEN_VAULT_DATABASE_URL_FILE": str(tmp_path / "nowhere")}
    done = cli("db", "current", env=unreadable)
    assert done.returncode == 3
    assert done.stderr == (
        f"error: cannot read TOKEN_VAULT_DATABASE_URL_FILE '{tmp_path / 'nowhere'}': "
        "No such file or directory\n"
    )
    sqlite = tmp_path / "url"
    sqlite.write_text(f"sqlite:///{tmp_path / 'vault.db'}\n")
    done = cli("db", "current", env={"TOKEN_VAULT_DATABASE_URL_FILE": str(sqlite)})
    assert (done.returncode, done.stdout.splitlines()[0]) == (0, "current: base")
