"""A PKCS#11 token or HSM as the key-encryption key, through python-pkcs11.

Install with the ``pkcs11`` extra (``pip install 'oidc-token-vault[pkcs11]'``). The KEK is an
AES-256 secret key on the token, found by its label; it should be created sensitive and
not extractable (``CKA_SENSITIVE``, ``CKA_EXTRACTABLE=false``), with ``CKA_ENCRYPT`` and
``CKA_DECRYPT``. Data keys are wrapped by the token with ``CKM_AES_GCM``: a 96-bit IV
from the token's random generator, the data key's id in the associated data, so a
wrapped key copied to another id does not unwrap. A wrapped key is::

    0x01 | IV (12 bytes) | ciphertext (32 bytes) | GCM tag (16 bytes)

Each call opens a session on the token and logs in with the user PIN, then closes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from token_vault.errors import ConfigurationError, KeyringError

if TYPE_CHECKING:
    from pkcs11 import Session

__all__ = ["Pkcs11Wrapper"]

_VERSION = b"\x01"
_IV_BYTES = 12
_TAG_BYTES = 16
_AAD_PREFIX = b"token-vault/kek/v1\x00"


def _aad(key_id: str) -> bytes:
    return _AAD_PREFIX + key_id.encode("utf-8")


class Pkcs11Wrapper:
    """An AES key on a PKCS#11 token wraps and unwraps data keys; it never leaves it."""

    __slots__ = ("_key_label", "_module", "_pin", "_token_label")

    def __init__(self, *, module: str | Path, token_label: str, pin: str, key_label: str) -> None:
        for name, value in (
            ("TOKEN_VAULT_PKCS11_MODULE", str(module)),
            ("TOKEN_VAULT_PKCS11_TOKEN_LABEL", token_label),
            ("TOKEN_VAULT_PKCS11_KEY_LABEL", key_label),
        ):
            if not value:
                raise ConfigurationError(f"{name} is empty")
        self._module = str(module)
        self._token_label = token_label
        self._pin = pin
        self._key_label = key_label

    def __repr__(self) -> str:
        return (
            f"Pkcs11Wrapper(module={self._module!r}, token_label={self._token_label!r}, "
            f"key_label={self._key_label!r})"
        )

    @property
    def kek_id(self) -> str:
        return f"pkcs11:{self._token_label}/{self._key_label}"

    def wrap(self, material: bytes, *, key_id: str) -> bytes:
        from pkcs11 import Mechanism, PKCS11Error
        from pkcs11.mechanisms import GCMParams

        with self._kek() as (session, kek):
            try:
                iv = session.generate_random(_IV_BYTES * 8)
                sealed = kek.encrypt(
                    material,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv, _aad(key_id)),
                )
            except PKCS11Error as exc:
                raise KeyringError(f"the token did not wrap it ({type(exc).__name__})") from None
        return _VERSION + bytes(iv) + bytes(sealed)

    def unwrap(self, blob: bytes, *, key_id: str) -> bytes:
        from pkcs11 import Mechanism, PKCS11Error
        from pkcs11.mechanisms import GCMParams

        if len(blob) <= 1 + _IV_BYTES + _TAG_BYTES or blob[:1] != _VERSION:
            raise KeyringError("not a key wrapped by a PKCS#11 token (unknown format)")
        iv, sealed = blob[1 : 1 + _IV_BYTES], blob[1 + _IV_BYTES :]
        with self._kek() as (_, kek):
            try:
                return bytes(
                    kek.decrypt(
                        sealed,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(iv, _aad(key_id)),
                    )
                )
            except PKCS11Error:
                raise KeyringError(
                    "the token did not unwrap it: it was wrapped by another key or for "
                    "another key id, or was altered"
                ) from None

    @contextmanager
    def _kek(self) -> Iterator[tuple[Session, Any]]:
        """A logged-in session on the token, and the KEK found by its label (a secret key
        that can encrypt and decrypt)."""
        try:
            import pkcs11
            from pkcs11 import KeyType, ObjectClass
        except ImportError:
            raise ConfigurationError(
                "TOKEN_VAULT_KEK_PROVIDER=pkcs11 needs python-pkcs11: "
                "pip install 'oidc-token-vault[pkcs11]'"
            ) from None
        where = f"token {self._token_label!r}"
        try:
            library = pkcs11.lib(self._module)
        except pkcs11.PKCS11Error as exc:
            raise KeyringError(f"cannot load the PKCS#11 module {self._module!r}: {exc}") from None
        try:
            token = library.get_token(token_label=self._token_label)
        except pkcs11.NoSuchToken:
            raise KeyringError(f"no {where} in {self._module!r}") from None
        except pkcs11.PKCS11Error as exc:
            raise KeyringError(f"cannot find {where} ({type(exc).__name__})") from None
        try:
            session = token.open(user_pin=self._pin)
        except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange):
            raise KeyringError(f"{where} refused the PIN") from None
        except pkcs11.PinLocked:
            raise KeyringError(f"the PIN of {where} is locked") from None
        except pkcs11.PKCS11Error as exc:
            raise KeyringError(f"cannot log in to {where} ({type(exc).__name__})") from None
        with session:
            try:
                kek = session.get_key(
                    label=self._key_label,
                    key_type=KeyType.AES,
                    object_class=ObjectClass.SECRET_KEY,
                )
            except pkcs11.NoSuchKey:
                raise KeyringError(f"no AES key labelled {self._key_label!r} on {where}") from None
            except pkcs11.MultipleObjectsReturned:
                raise KeyringError(
                    f"several keys labelled {self._key_label!r} on {where}; labels must be unique"
                ) from None
            if not isinstance(kek, pkcs11.EncryptMixin) or not isinstance(kek, pkcs11.DecryptMixin):
                raise KeyringError(f"key {self._key_label!r} on {where} cannot encrypt and decrypt")
            yield session, kek
