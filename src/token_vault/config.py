"""Settings from the environment (prefix ``TOKEN_VAULT_``) or an optional ``.env`` file.

The vault itself never reads the environment: it takes a URL and a keyring.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from token_vault.crypto.keyring import Keyring
from token_vault.errors import KeyringError
from token_vault.storage.url import DEFAULT_DATABASE_URL, DatabaseURL

if TYPE_CHECKING:
    from token_vault.vault.core import Clock, TokenVault

__all__ = ["VaultSettings"]


class VaultSettings(BaseSettings):
    """Where the vault's database is and which keys open it."""

    model_config = SettingsConfigDict(
        env_prefix="TOKEN_VAULT_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="postgresql://user:pw@host:port/db or sqlite:///path (the default)",
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
        if self.keys_file is not None:
            try:
                spec = self.keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyringError(
                    f"cannot read TOKEN_VAULT_KEYS_FILE {str(self.keys_file)!r}: {exc.strerror}"
                ) from None
            return Keyring.from_spec(spec)
        raise KeyringError(
            "no encryption key: set TOKEN_VAULT_KEYS (or TOKEN_VAULT_KEYS_FILE); "
            "`token-vault keys generate` prints one. The vault has no plaintext mode."
        )
