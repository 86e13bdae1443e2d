"""What the security review found, each pinned: unsafe production settings refused,
passwords redacted, files private, bad input a 400, discovery kept to the issuer."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import cli
from token_vault import DatabaseURL, OpenIDProvider, ProviderSettings, ValidationError
from token_vault.errors import ProviderResponseError
from token_vault.service import dev
from token_vault.service.settings import ServiceSettings
from token_vault.storage.sqlite import connect_sqlite
from token_vault.testing.pgcluster import PgCluster
from token_vault.vault.validation import check_expires_at

GOOD: dict[str, Any] = {
    "mode": "production",
    "database_url": "postgresql://vault@db.internal:5432/vault",
    "keys": "primary=k1,k1=" + "A" * 43 + "=",
    "oidc_issuer": "https://id.example.com/realms/apps",
    "oidc_client_id": "token-vault-web",
    "oidc_client_secret": "Qm9iIHdhcyBoZXJlIGFuZCBsZWZ0IGEgc2VjcmV0",
    "session_secret": "tWq3-a8Zp0rK_Lm4Yx7Ncv2Bd9Hs6Jf1Ge5Qu",
    "public_url": "https://vault.example.com",
}


def problems(**changes: Any) -> list[str]:
    return ServiceSettings.model_validate({**GOOD, **changes}).problems()


def test_a_sound_production_configuration_has_no_problem() -> None:
    assert problems() == []


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"public_url": None}, "TOKEN_VAULT_PUBLIC_URL"),
        ({"public_url": "http://vault.example.com"}, "TOKEN_VAULT_PUBLIC_URL"),
        ({"oidc_issuer": "http://id.example.com/realms/apps"}, "TOKEN_VAULT_OIDC_ISSUER"),
        (
            {"oidc_issuer": "http://id.example.com/r", "insecure_http": True},
            "TOKEN_VAULT_OIDC_ISSUER",  # plain http only on loopback, even when allowed
        ),
        ({"session_secret": "a" * 40}, "TOKEN_VAULT_SESSION_SECRET"),
        ({"api_audience": "token-vault-web"}, "TOKEN_VAULT_API_AUDIENCE"),
        ({"caller_policy": "{not json"}, "TOKEN_VAULT_CALLER_POLICY"),
        ({"caller_policy": '{"callers": {"x": {"actions": ["steal"]}}}'}, "steal"),
        ({"oidc_client_secret": "changeme"}, "TOKEN_VAULT_OIDC_CLIENT_SECRET"),
    ],
)
def test_production_refuses_each_unsafe_setting(changes: dict[str, Any], named: str) -> None:
    found = problems(**changes)
    assert any(named in problem for problem in found), found


def test_a_dev_mode_key_file_is_refused_in_production(tmp_path: Path) -> None:
    dev_keys = tmp_path / "dev-keys"
    dev_keys.write_text(GOOD["keys"])
    found = problems(keys=None, keys_file=dev_keys)
    assert any("dev-mode file" in problem for problem in found), found


def test_plain_http_on_loopback_needs_the_explicit_switch() -> None:
    loopback = {"public_url": "http://127.0.0.1:8000", "oidc_issuer": "http://127.0.0.1:8080/r"}
    assert problems(**loopback) != []
    assert problems(**loopback, insecure_http=True) == []


def test_passwords_are_redacted_wherever_a_url_is_printed() -> None:
    url = DatabaseURL.parse("postgresql://vault:pw-in-netloc@db/v?password=pw-in-query&x=1")
    shown = url.redacted()
    assert "pw-in-netloc" not in shown
    assert "pw-in-query" not in shown
    assert shown == "postgresql://vault:***@db/v?password=***&x=1"
    assert "pw-in" not in repr(url) + str(url)


def test_a_wrong_database_password_is_exit_6_with_a_clean_message(
    pg_cluster: PgCluster,
) -> None:
    wrong = pg_cluster.url_for("postgres").replace(pg_cluster.password, "not-the-password")
    for command in (["db", "upgrade"], ["db", "current"], ["stats"]):
        result = cli(*command, env={"TOKEN_VAULT_DATABASE_URL": wrong, "TOKEN_VAULT_KEYS": (
            "primary=k1,k1=" + "A" * 43 + "=")})  # fmt: skip
        assert result.returncode == 6, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert "not-the-password" not in result.stdout + result.stderr


def test_an_expiry_past_the_last_utc_datetime_is_invalid_input() -> None:
    edge = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    with pytest.raises(ValidationError) as refused:
        check_expires_at(edge)
    assert refused.value.field == "expires_at"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dev_files_and_the_sqlite_file_are_private(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    secret = dev._secret_file(var / "dev-keys", "primary=...", "encryption key")
    assert _mode(secret) == 0o600
    assert dev._secret_file(var / "dev-keys", "other", "encryption key").read_text() == (
        "primary=...\n"
    )  # an existing file is kept, never overwritten
    database = tmp_path / "vault.db"
    connect_sqlite(str(database)).close()
    assert _mode(database) == 0o600


async def test_discovery_may_not_send_the_client_elsewhere() -> None:
    issuer = "https://id.example.com/realms/apps"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "issuer": issuer,
                "token_endpoint": "https://collector.example.net/token",
                "jwks_uri": f"{issuer}/certs",
            },
        )

    provider = OpenIDProvider(
        ProviderSettings(issuer, "c", "s"), transport=httpx.MockTransport(handler)
    )
    with pytest.raises(ProviderResponseError, match="outside the issuer's origin"):
        await provider.metadata()
    await provider.close()
    trusted = OpenIDProvider(
        ProviderSettings(issuer, "c", "s", trusted_origins=("https://collector.example.net",)),
        transport=httpx.MockTransport(handler),
    )
    assert (await trusted.metadata())["issuer"] == issuer
    await trusted.close()
