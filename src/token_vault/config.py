"""Settings from the environment (prefix ``TOKEN_VAULT_``) or an optional ``.env`` file.

Every secret ``X`` may instead come from a file named by ``X_FILE`` (a mounted Docker or
Kubernetes secret): ``TOKEN_VAULT_DATABASE_URL_FILE``, ``TOKEN_VAULT_KEYS_FILE``,
``TOKEN_VAULT_OIDC_CLIENT_SECRET_FILE``, ``TOKEN_VAULT_SESSION_SECRET_FILE``. The file is
read once, when the settings are made; setting both ``X`` and ``X_FILE`` is an error.

The vault itself never reads the environment: it takes a URL and a keyring.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from token_vault.crypto.keyring import Keyring
from token_vault.errors import ConfigurationError, KeyringError
from token_vault.storage.url import DEFAULT_DATABASE_URL, DatabaseURL

if TYPE_CHECKING:
    from token_vault.vault.core import Clock, TokenVault

__all__ = ["VaultSettings"]

_PREFIX = "TOKEN_VAULT_"
_FILE = "_file"


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and str(value).strip() != ""


def _read_secret(name: str, path: object) -> str:
    """The secret in the file ``path`` names (for the variable ``name``); never echoed."""
    variable = f"{_PREFIX}{name.upper()}{_FILE.upper()}"
    try:
        value = Path(str(path)).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {variable} {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{variable} {str(path)!r} is not UTF-8 text") from None
    if not value:
        raise ConfigurationError(f"{variable} {str(path)!r} is empty")
    return value


class VaultSettings(BaseSettings):
    """Where the vault's database is and which keys open it."""

    model_config = SettingsConfigDict(
        env_prefix=_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="postgresql://user:pw@host:port/db or sqlite:///path (the default)",
    )
    database_url_file: Path | None = Field(
        default=None, description="a file holding the database URL (instead of DATABASE_URL)"
    )
    keys: SecretStr | None = Field(
        default=None, description="primary=ID,ID=BASE64,... (see `token-vault keys generate`)"
    )
    keys_file: Path | None = Field(
        default=None, description="a file holding the key spec (instead of KEYS)"
    )
    pool_size: int = Field(
        default=10, ge=1, le=200, description="PostgreSQL connections per process"
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """For each field ``X`` with an ``X_file`` field: the value from that file."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in cls.model_fields:
            path = data.get(f"{name}{_FILE}")
            if not _is_set(path):
                continue
            if _is_set(data.get(name)):
                variable = f"{_PREFIX}{name.upper()}"
                raise ConfigurationError(
                    f"both {variable} and {variable}{_FILE.upper()} are set; set one of them"
                )
            data[name] = _read_secret(name, path)
        return data

    async def open_vault(self, *, clock: Clock | None = None) -> TokenVault:
        """Open the vault these settings describe (database, keys, pool size)."""
        from token_vault.vault.core import TokenVault, utc_now

        return await TokenVault.open(
            self.database(), self.keyring(), clock=clock or utc_now, pool_size=self.pool_size
        )

    def database(self) -> DatabaseURL:
        return DatabaseURL.parse(self.database_url.get_secret_value())

    def keyring(self) -> Keyring:
        """The keyring, or :class:`KeyringError` saying how to provide one."""
        if self.keys is not None and self.keys.get_secret_value().strip():
            return Keyring.from_spec(self.keys.get_secret_value())
        raise KeyringError(
            "no encryption key: set TOKEN_VAULT_KEYS (or TOKEN_VAULT_KEYS_FILE); "
            "`token-vault keys generate` prints one. The vault has no plaintext mode."
        )
