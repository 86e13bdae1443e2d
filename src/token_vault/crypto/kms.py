"""AWS KMS as the key-encryption key: ``Encrypt`` and ``Decrypt`` through boto3.

Install with the ``kms`` extra (``pip install 'oidc-token-vault[kms]'``). Credentials come
from boto3's usual chain (environment, profile, instance or task role); the vault's
settings only name the key (``TOKEN_VAULT_KMS_KEY_ID``: key id, ARN, alias name or alias
ARN), and optionally the region and an endpoint (a VPC endpoint, or a test server).

Each data key is wrapped with the encryption context ``{"token-vault:key-id": ID}``, so a
wrapped key copied to another id does not unwrap, and CloudTrail shows which data key
each ``Decrypt`` opened.

botocore logs request and response bodies at DEBUG, and here those bodies carry the data
keys: this module drops the DEBUG records of the two loggers that write them
(``botocore.endpoint`` and ``botocore.parsers``), whatever the log level.
"""

from __future__ import annotations

import logging
from typing import Any

from token_vault.errors import ConfigurationError, KeyringError

__all__ = ["ENCRYPTION_CONTEXT_KEY", "AwsKmsWrapper"]

ENCRYPTION_CONTEXT_KEY = "token-vault:key-id"
_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers")

# What each refusal usually means, added to KMS's own (often empty) message.
_HINTS = {
    "AccessDeniedException": "this host's credentials may not use the key",
    "DisabledException": "the key is disabled",
    "IncorrectKeyException": "the wrapped key was made by another KMS key",
    "InvalidCiphertextException": (
        "the wrapped key was made by another KMS key or for another key id, or was altered"
    ),
    "KMSInvalidStateException": "the key is pending deletion or unavailable",
    "NotFoundException": "no such key in this account and region",
}


class _DropDebug(logging.Filter):
    """Drops DEBUG records: botocore writes request and response bodies there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _quiet_bodies() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropDebug) for f in logger.filters):
            logger.addFilter(_DropDebug())


def _region_of(key_id: str) -> str | None:
    """The region of an ARN (``arn:aws:kms:REGION:ACCOUNT:key/ID``), else ``None``."""
    parts = key_id.split(":")
    return parts[3] if len(parts) >= 6 and parts[0] == "arn" and parts[3] else None


class AwsKmsWrapper:
    """A KMS key wraps and unwraps data keys; the key never leaves KMS.

    ``client`` is a boto3 KMS client: :meth:`connect` makes one from settings, tests may
    pass one pointed at a test server.
    """

    __slots__ = ("_client", "_key_id")

    def __init__(self, key_id: str, client: Any) -> None:
        if not key_id:
            raise ConfigurationError("TOKEN_VAULT_KMS_KEY_ID is empty")
        self._key_id = key_id
        self._client = client
        _quiet_bodies()

    @classmethod
    def connect(
        cls,
        key_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout: float = 10.0,
    ) -> AwsKmsWrapper:
        """A wrapper on a new boto3 session (standard retries, 3 attempts, ``timeout``
        seconds to connect and to read)."""
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError
        except ImportError:
            raise ConfigurationError(
                "TOKEN_VAULT_KEK_PROVIDER=aws-kms needs boto3: pip install 'oidc-token-vault[kms]'"
            ) from None
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "max_attempts": 3},
        )
        try:
            client = boto3.session.Session().client(
                "kms",
                region_name=region or _region_of(key_id),
                endpoint_url=endpoint_url or None,
                config=config,
            )
        except BotoCoreError as exc:  # no region, a malformed endpoint
            raise KeyringError(
                f"cannot set up the KMS client: {exc} (set TOKEN_VAULT_KMS_REGION, "
                "AWS_REGION, or give TOKEN_VAULT_KMS_KEY_ID as an ARN)"
            ) from None
        return cls(key_id, client)

    def __repr__(self) -> str:
        return f"AwsKmsWrapper(key_id={self._key_id!r})"

    @property
    def kek_id(self) -> str:
        return f"aws-kms:{self._key_id}"

    def wrap(self, material: bytes, *, key_id: str) -> bytes:
        answer = self._call(
            "encrypt",
            KeyId=self._key_id,
            Plaintext=material,
            EncryptionContext={ENCRYPTION_CONTEXT_KEY: key_id},
        )
        return bytes(answer["CiphertextBlob"])

    def unwrap(self, blob: bytes, *, key_id: str) -> bytes:
        answer = self._call(
            "decrypt",
            KeyId=self._key_id,
            CiphertextBlob=blob,
            EncryptionContext={ENCRYPTION_CONTEXT_KEY: key_id},
        )
        return bytes(answer["Plaintext"])

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer: dict[str, Any] = getattr(self._client, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "error")
            said = [str(error.get("Message") or ""), _HINTS.get(code, "")]
            detail = "; ".join(part for part in said if part)
            raise KeyringError(
                f"KMS {operation} refused: {code}" + (f" ({detail})" if detail else "")
            ) from None
        except BotoCoreError as exc:  # unreachable endpoint, no credentials, timeouts
            raise KeyringError(f"KMS {operation} failed: {exc}") from None
        return answer
