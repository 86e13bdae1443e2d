"""Database URLs as users write them, normalised for each driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from token_vault.errors import ConfigurationError

__all__ = ["DEFAULT_DATABASE_URL", "DatabaseURL"]

DEFAULT_DATABASE_URL = "sqlite:///token-vault.db"

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg"}
_SECRET_PARAMETERS = {"password", "sslpassword", "passfile"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A parsed database URL. ``repr`` and ``str`` hide the password."""

    dialect: str  # "postgresql" or "sqlite"
    raw: str = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        scheme, sep, _ = url.partition("://")
        if not sep:
            raise ConfigurationError(
                "database URL must look like postgresql://user:pw@host:5432/db "
                "or sqlite:///path/to/vault.db"
            )
        scheme = scheme.lower()
        if scheme in _POSTGRES_SCHEMES:
            return cls("postgresql", url)
        if scheme in _SQLITE_SCHEMES:
            parsed = cls("sqlite", url)
            if parsed.sqlite_path in ("", ":memory:"):
                raise ConfigurationError(
                    "an in-memory SQLite database is not supported; give a file path, "
                    "e.g. sqlite:///token-vault.db"
                )
            return parsed
        raise ConfigurationError(
            f"unsupported database scheme {scheme!r}: use postgresql:// or sqlite:///"
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def sqlite_path(self) -> str:
        """The file path of a SQLite URL (``sqlite:///rel.db``, ``sqlite:////abs.db``)."""
        rest = self.raw.partition("://")[2]
        return rest[1:].partition("?")[0] if rest.startswith("/") else rest.partition("?")[0]

    @property
    def asyncpg_dsn(self) -> str:
        """The DSN asyncpg accepts: plain ``postgresql://``."""
        parts = urlsplit(self.raw)
        return urlunsplit(("postgresql", *parts[1:]))

    @property
    def sqlalchemy_url(self) -> str:
        """The URL Alembic's engine needs, with an explicit driver."""
        if self.is_sqlite:
            return f"sqlite:///{Path(self.sqlite_path)}"
        parts = urlsplit(self.raw)
        return urlunsplit(("postgresql+asyncpg", *parts[1:]))

    def __str__(self) -> str:
        return self.redacted()

    def redacted(self) -> str:
        """The URL with any password (``user:pw@`` or ``?password=``) replaced by ``***``."""
        parts = urlsplit(self.raw)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        query = "&".join(
            f"{name}=***" if name.lower() in _SECRET_PARAMETERS else f"{name}={value}"
            for name, value in (
                pair.split("=", 1) if "=" in pair else (pair, "")
                for pair in parts.query.split("&")
                if pair
            )
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
