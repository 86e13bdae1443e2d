"""Database URLs as users write them."""

from __future__ import annotations

import pytest

from token_vault import ConfigurationError, DatabaseURL


@pytest.mark.parametrize(
    "raw", ["postgresql://u:pw@h:5432/db", "postgres://u:pw@h/db", "postgresql+asyncpg://u@h/db"]
)
def test_postgres_forms(raw: str) -> None:
    url = DatabaseURL.parse(raw)
    assert url.dialect == "postgresql"
    assert url.asyncpg_dsn.startswith("postgresql://")
    assert url.sqlalchemy_url.startswith("postgresql+asyncpg://")


def test_sqlite_paths() -> None:
    assert DatabaseURL.parse("sqlite:///vault.db").sqlite_path == "vault.db"
    assert DatabaseURL.parse("sqlite:////var/lib/vault.db").sqlite_path == "/var/lib/vault.db"


@pytest.mark.parametrize(
    "raw", ["mysql://u@h/db", "vault.db", "sqlite:///:memory:", "sqlite://", ""]
)
def test_unsupported_urls_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        DatabaseURL.parse(raw)


def test_password_never_shown() -> None:
    url = DatabaseURL.parse("postgresql://vault:s3cr%40t@db:5432/vault")
    for text in (str(url), repr(url), url.redacted()):
        assert "s3cr" not in text
    assert "***" in str(url)
