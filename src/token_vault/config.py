"""Settings from the environment (prefix ``TOKEN_VAULT_``) or an optional ``.env`` file.

Every secret ``X`` may instead come from a file named by ``X_FILE`` (a mounted Docker or
Kubernetes secret): ``TOKEN_VAULT_DATABASE_URL_FILE``, ``TOKEN_VAULT_KEYS_FILE``,
``TOKEN_VAULT_OIDC_CLIENT_SECRET_FILE``, ``TOKEN_VAULT_SESSION_SECRET_FILE``. The file is
read once, when the settings are made; setting both ``X`` and ``X_FILE`` is an error.

The vault itself never reads the environment: it takes a URL and a keyring. The keyring
comes from ``TOKEN_VAULT_KEYS`` (or ``TOKEN_VAULT_KEYS_FILE``): plain keys, or keys wrapped
by a key-encryption key that ``TOKEN_VAULT_KEK_PROVIDER`` names (``aws-kms`` or
``pkcs11``), unwrapped once per settings object and then held in memory only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from token_vault.crypto.keyring import Keyring
from token_vault.crypto.wrapping import (
    KeyWrapper,
    is_wrapped_spec,
    unwrap_keyring,
    wrap_keyring,
)
from token_vault.errors import ConfigurationError, KeyringError
from token_vault.storage.url import DEFAULT_DATABASE_URL, DatabaseURL

if TYPE_CHECKING:
    from token_vault.vault.core import Clock, TokenVault

__all__ = ["KEK_PROVIDERS", "VaultSettings"]

KEK_PROVIDERS = {"aws-kms": "kms_key_id", "pkcs11": "pkcs11_key_label"}
"""Each key-encryption-key provider, and the setting that names its KEK."""

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
    kek_provider: str | None = Field(
        default=None,
        description="`aws-kms` or `pkcs11`: KEYS then holds only keys wrapped by that "
        "provider's key-encryption key (see docs/keys.md and `token-vault keys wrap`)",
    )
    kms_key_id: str | None = Field(
        default=None,
        description="aws-kms: the KEK, as key id, key ARN, alias name or alias ARN "
        "(credentials come from boto3's usual chain)",
    )
    kms_region: str | None = Field(
        default=None,
        description="aws-kms: the region, when neither the key ARN nor AWS_REGION says it",
    )
    kms_endpoint_url: str | None = Field(
        default=None, description="aws-kms: another endpoint (a VPC endpoint, a test server)"
    )
    pkcs11_module: Path | None = Field(
        default=None,
        description="pkcs11: the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so",
    )
    pkcs11_token_label: str | None = Field(
        default=None, description="pkcs11: the label of the token holding the KEK"
    )
    pkcs11_pin: SecretStr | None = Field(
        default=None, description="pkcs11: the token's user PIN (or PKCS11_PIN_FILE)"
    )
    pkcs11_pin_file: Path | None = Field(
        default=None, description="pkcs11: a file holding the user PIN (instead of PKCS11_PIN)"
    )
    pkcs11_key_label: str | None = Field(
        default=None, description="pkcs11: the label of the AES-256 KEK on the token"
    )

    _keyring: Keyring | None = PrivateAttr(default=None)

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

    async def open_vault(self, *, clock: Clock | None = None, events: bool = False) -> TokenVault:
        """Open the vault these settings describe (database, keys, pool size); with
        ``events``, changes the app hears of leave events in the outbox."""
        from token_vault.vault.core import TokenVault, utc_now

        return await TokenVault.open(
            self.database(),
            self.keyring(),
            clock=clock or utc_now,
            pool_size=self.pool_size,
            events=events,
        )

    def database(self) -> DatabaseURL:
        return DatabaseURL.parse(self.database_url.get_secret_value())

    def key_spec(self) -> str:
        """The key specification as configured (plain or wrapped keys), or
        :class:`KeyringError` saying how to provide one."""
        if self.keys is not None and self.keys.get_secret_value().strip():
            return self.keys.get_secret_value()
        if self.keys_file is not None:
            try:
                return self.keys_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeyringError(
                    f"cannot read TOKEN_VAULT_KEYS_FILE {str(self.keys_file)!r}: {exc.strerror}"
                ) from None
        raise KeyringError(
            "no encryption key: set TOKEN_VAULT_KEYS (or TOKEN_VAULT_KEYS_FILE); "
            "`token-vault keys generate` prints one. The vault has no plaintext mode."
        )

    def keyring(self) -> Keyring:
        """The keyring, or :class:`KeyringError` saying how to provide one.

        Wrapped keys are unwrapped by the configured KEK on the first call only; the
        data keys then stay in this object's memory, never on disk or in a log.
        """
        if self._keyring is None:
            spec = self.key_spec()
            wrapper = self.key_wrapper()
            if wrapper is not None:
                self._keyring = unwrap_keyring(spec, wrapper)
            elif is_wrapped_spec(spec):
                raise KeyringError(
                    "TOKEN_VAULT_KEYS holds wrapped keys: set TOKEN_VAULT_KEK_PROVIDER (and "
                    "that provider's settings) so the vault can unwrap them"
                )
            else:
                self._keyring = Keyring.from_spec(spec)
        return self._keyring

    def key_wrapper(
        self, *, provider: str | None = None, kek: str | None = None
    ) -> KeyWrapper | None:
        """The key-encryption key these settings name, or ``None`` for plain keys.

        ``provider`` and ``kek`` override ``TOKEN_VAULT_KEK_PROVIDER`` and the setting
        that names the KEK (:data:`KEK_PROVIDERS`), for re-wrapping under another KEK.
        """
        provider = provider or self.kek_provider or None
        if provider is None:
            return None
        if provider not in KEK_PROVIDERS:
            raise ConfigurationError(
                f"TOKEN_VAULT_KEK_PROVIDER must be one of {', '.join(sorted(KEK_PROVIDERS))} "
                f"(got {provider!r})"
            )
        name = kek or getattr(self, KEK_PROVIDERS[provider])
        if not name:
            setting = f"TOKEN_VAULT_{KEK_PROVIDERS[provider].upper()}"
            raise KeyringError(f"{setting} is required with TOKEN_VAULT_KEK_PROVIDER={provider}")
        if provider == "aws-kms":
            from token_vault.crypto.kms import AwsKmsWrapper

            return AwsKmsWrapper.connect(
                name, region=self.kms_region, endpoint_url=self.kms_endpoint_url
            )
        from token_vault.crypto.hsm import Pkcs11Wrapper

        module, token = self.pkcs11_module, self.pkcs11_token_label
        if module is None or not token:
            raise KeyringError(
                "TOKEN_VAULT_PKCS11_MODULE and TOKEN_VAULT_PKCS11_TOKEN_LABEL are required "
                "with TOKEN_VAULT_KEK_PROVIDER=pkcs11"
            )
        return Pkcs11Wrapper(
            module=module,
            token_label=token,
            pin=self._pkcs11_pin(),
            key_label=name,
        )

    def key_spec_for(self, keyring: Keyring) -> str:
        """The specification to configure for ``keyring``: wrapped by the configured KEK
        when there is one, else plain (a secret either way only in the plain case)."""
        wrapper = self.key_wrapper()
        return keyring.to_spec() if wrapper is None else wrap_keyring(keyring, wrapper)

    def _pkcs11_pin(self) -> str:
        if self.pkcs11_pin is not None and self.pkcs11_pin.get_secret_value():
            return self.pkcs11_pin.get_secret_value()
        if self.pkcs11_pin_file is not None:
            try:
                return self.pkcs11_pin_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise KeyringError(
                    f"cannot read TOKEN_VAULT_PKCS11_PIN_FILE {str(self.pkcs11_pin_file)!r}: "
                    f"{exc.strerror}"
                ) from None
        raise KeyringError(
            "TOKEN_VAULT_PKCS11_PIN (or TOKEN_VAULT_PKCS11_PIN_FILE) is required with "
            "TOKEN_VAULT_KEK_PROVIDER=pkcs11"
        )
