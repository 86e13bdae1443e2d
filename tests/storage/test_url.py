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


def test_several_hosts_are_accepted_in_order() -> None:
    url = DatabaseURL.parse(
        "postgresql://vault:pw@db1:5432,db2:6432,[::1]:5433/vault?target_session_attrs=read-write"
    )
    assert url.hosts == (("db1", 5432), ("db2", 6432), ("::1", 5433))
    assert url.asyncpg_dsn == (
        "postgresql://vault:pw@db1:5432,db2:6432,[::1]:5433/vault?target_session_attrs=read-write"
    )


def test_several_hosts_reach_sqlalchemy_as_host_and_port_lists() -> None:
    url = DatabaseURL.parse("postgresql://vault:pw@db1:5432,db2/vault")
    assert url.sqlalchemy_url == (
        "postgresql+asyncpg://vault:pw@/vault"
        "?host=db1,db2&port=5432,5432&target_session_attrs=read-write"
    )


def test_the_vault_connects_only_to_a_server_that_accepts_writes() -> None:
    assert DatabaseURL.parse("postgresql://u@h/db").asyncpg_dsn == (
        "postgresql://u@h/db?target_session_attrs=read-write"
    )
    primary = DatabaseURL.parse("postgresql://u@h1,h2/db?target_session_attrs=primary")
    assert primary.target_session_attrs == "primary"
    assert primary.asyncpg_dsn.endswith("?target_session_attrs=primary")


@pytest.mark.parametrize("attrs", ["any", "standby", "prefer-standby", "read-only", ""])
def test_session_attributes_that_could_land_on_a_standby_are_refused(attrs: str) -> None:
    with pytest.raises(ConfigurationError, match="primary only"):
        DatabaseURL.parse(f"postgresql://u@h1:1,h2:2/db?target_session_attrs={attrs}")


@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u@h1:5432,/db",
        "postgresql://u@h1:5432,:5433/db",
        "postgresql://u@h1:port/db",
        "postgresql://u@h1:70000/db",
        "postgresql://u@[::1/db",
    ],
)
def test_malformed_host_lists_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        DatabaseURL.parse(raw)


def test_pgbouncer_transaction_mode_turns_off_named_prepared_statements() -> None:
    url = DatabaseURL.parse("postgresql://u:pw@h:6432/db?sslmode=disable&pgbouncer=transaction")
    assert url.pgbouncer == "transaction"
    assert url.asyncpg_connect_kwargs() == {"statement_cache_size": 0}
    assert url.asyncpg_dsn == (
        "postgresql://u:pw@h:6432/db?sslmode=disable&target_session_attrs=read-write"
    )
    assert "pgbouncer" not in url.sqlalchemy_url
    assert url.sqlalchemy_url.endswith("&prepared_statement_cache_size=0")


def test_pgbouncer_session_mode_and_plain_urls_keep_the_statement_cache() -> None:
    for raw in ("postgresql://u@h/db?pgbouncer=session", "postgresql://u@h/db"):
        url = DatabaseURL.parse(raw)
        assert url.asyncpg_connect_kwargs() == {}
        assert "pgbouncer" not in url.asyncpg_dsn


def test_unknown_pgbouncer_mode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pgbouncer=transaction"):
        DatabaseURL.parse("postgresql://u@h/db?pgbouncer=statement")


def test_password_never_shown_with_several_hosts() -> None:
    url = DatabaseURL.parse("postgresql://vault:s3cr%40t@db1:5432,db2:5432/vault")
    assert "s3cr" not in str(url)
    assert str(url) == "postgresql://vault:***@db1:5432,db2:5432/vault"
