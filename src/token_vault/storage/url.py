"""Database URLs as users write them, normalised for each driver.

PostgreSQL URLs may name several hosts, as libpq does, so a vault follows a failover::

    postgresql://vault:pw@db1:5432,db2:5432/vault?target_session_attrs=read-write

The vault only ever connects to a server that accepts writes: its token reads must see
the newest refresh token (a stale one would be replayed and kill the user's session), so
``target_session_attrs`` is ``read-write`` unless the URL says ``primary``, and the
values that would let it land on a standby are refused.

Two parameters are the vault's own and are never sent to the server:

* ``pgbouncer=transaction``: the URL points at PgBouncer in transaction pooling mode,
  which hands each transaction a different server connection. asyncpg then keeps no
  named prepared statements (``statement_cache_size=0``): each statement is parsed,
  bound and run in one batch on whichever server connection PgBouncer picks.
* ``pgbouncer=session``: PgBouncer in session pooling mode; nothing needs to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from token_vault.errors import ConfigurationError

__all__ = ["DEFAULT_DATABASE_URL", "DatabaseURL"]

DEFAULT_DATABASE_URL = "sqlite:///token-vault.db"

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg"}
_SECRET_PARAMETERS = {"password", "sslpassword", "passfile"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"}

_PGBOUNCER = "pgbouncer"
_POOL_MODES = ("transaction", "session")
_SESSION_ATTRS = "target_session_attrs"
_WRITABLE = ("read-write", "primary")
_DEFAULT_PORT = 5432


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
            parsed = cls("postgresql", url)
            try:
                parsed._check_postgres()
            except ValueError:  # urlsplit: e.g. an unclosed IPv6 bracket
                raise ConfigurationError("malformed database URL host") from None
            return parsed
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

    def _check_postgres(self) -> None:
        _ = self.hosts  # raises ConfigurationError on a malformed host list
        params = dict(self._query())
        mode = params.get(_PGBOUNCER)
        if mode is not None and mode not in _POOL_MODES:
            raise ConfigurationError(
                f"pgbouncer={mode!r} in the database URL: use pgbouncer=transaction "
                "(transaction pooling) or pgbouncer=session"
            )
        attrs = params.get(_SESSION_ATTRS)
        if attrs is not None and attrs not in _WRITABLE:
            raise ConfigurationError(
                f"target_session_attrs={attrs!r} in the database URL: the vault reads and "
                "writes tokens on the primary only (a standby may hold a stale refresh "
                "token); use read-write (the default) or primary"
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
    def hosts(self) -> tuple[tuple[str, int | None], ...]:
        """The ``(host, port)`` pairs of the URL's network location, in order (empty
        when the host is given otherwise, e.g. a Unix socket in ``?host=``)."""
        hostlist = urlsplit(self.raw).netloc.rpartition("@")[2]
        if not hostlist:
            return ()
        found: list[tuple[str, int | None]] = []
        for item in hostlist.split(","):
            host, port = _split_host_port(item)
            if not host:
                raise ConfigurationError(
                    "the database URL's host list has an empty host: write "
                    "postgresql://user:pw@host1:5432,host2:5432/db"
                )
            found.append((host, port))
        return tuple(found)

    @property
    def pgbouncer(self) -> str | None:
        """``"transaction"`` or ``"session"`` when the URL says PgBouncer is in front."""
        return dict(self._query()).get(_PGBOUNCER)

    @property
    def target_session_attrs(self) -> str:
        """The kind of server the vault accepts: ``read-write`` unless the URL says
        ``primary``."""
        return dict(self._query()).get(_SESSION_ATTRS, "read-write")

    @property
    def asyncpg_dsn(self) -> str:
        """The DSN asyncpg accepts: plain ``postgresql://``, the vault's own parameters
        removed, ``target_session_attrs`` always present."""
        parts = urlsplit(self.raw)
        return urlunsplit(("postgresql", parts.netloc, parts.path, self._driver_query(), ""))

    def asyncpg_connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` that the DSN cannot carry."""
        if self.pgbouncer == "transaction":
            # PgBouncer 1.18-1.20 in transaction pooling cannot keep a named prepared
            # statement on the client's behalf; asyncpg then sends Parse/Bind/Execute/Sync
            # as one batch with the unnamed statement.
            return {"statement_cache_size": 0}
        return {}

    @property
    def sqlalchemy_url(self) -> str:
        """The URL Alembic's engine needs, with an explicit driver (and, for several
        hosts, the ``?host=h1,h2&port=p1,p2`` form SQLAlchemy's asyncpg dialect reads)."""
        if self.is_sqlite:
            return f"sqlite:///{Path(self.sqlite_path)}"
        parts = urlsplit(self.raw)
        netloc = parts.netloc
        query = self._driver_query()
        if self.pgbouncer == "transaction":
            query += "&prepared_statement_cache_size=0"
        hosts = self.hosts
        if len(hosts) > 1:
            userinfo, at, _ = netloc.rpartition("@")
            netloc = userinfo + at
            names = ",".join(host for host, _ in hosts)
            ports = ",".join(str(port or _DEFAULT_PORT) for _, port in hosts)
            query = f"host={names}&port={ports}&{query}"
        return urlunsplit(("postgresql+asyncpg", netloc, parts.path, query, ""))

    def _query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.raw).query, keep_blank_values=True)

    def _driver_query(self) -> str:
        """The query string without the vault's own parameters, with
        ``target_session_attrs`` (read-write unless the URL says otherwise)."""
        kept = [
            item
            for item in urlsplit(self.raw).query.split("&")
            if item and item.partition("=")[0] != _PGBOUNCER
        ]
        if not any(item.partition("=")[0] == _SESSION_ATTRS for item in kept):
            kept.append(f"{_SESSION_ATTRS}=read-write")
        return "&".join(kept)

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


def _split_host_port(item: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"malformed IPv6 host in the database URL: {item!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"malformed port in the database URL: {port_text!r}")
    return host, int(port_text)
