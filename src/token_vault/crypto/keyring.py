"""A keyring of AES-256-GCM keys: the primary seals, every key opens.

This is the only module that imports ``cryptography.hazmat``. Everything else calls
:meth:`Keyring.seal` and :meth:`Keyring.open`.

Each ciphertext is bound to its row with associated data built from the user id, the
token type and the key id, so a ciphertext copied into another row does not decrypt.

Key specification (``TOKEN_VAULT_KEYS`` or the file named by ``TOKEN_VAULT_KEYS_FILE``)::

    primary=k2,k2=<base64 of 32 bytes>,k1=<base64 of 32 bytes>

Entries are separated by commas or whitespace; ``primary=`` names the key that seals.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from token_vault.errors import DecryptionError, KeyringError

__all__ = ["Key", "Keyring", "Sealed", "generate_key_spec"]

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AD_PREFIX = b"token-vault/v1"
_AD_PREFIX_FRAMED = len(_AD_PREFIX).to_bytes(4, "big") + _AD_PREFIX


@dataclass(frozen=True, slots=True)
class Key:
    """One named 256-bit key. The key material never appears in ``repr``."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.key_id) or self.key_id == "primary":
            raise KeyringError(
                "key ids are 1-64 characters of letters, digits, '_', '.', '-' "
                "and may not be 'primary'"
            )
        if len(self.material) != KEY_BYTES:
            raise KeyringError(
                f"key {self.key_id!r} is {len(self.material)} bytes; AES-256 needs {KEY_BYTES}"
            )

    @classmethod
    def generate(cls, key_id: str | None = None) -> Key:
        """A fresh random key; the default id carries today's date."""
        if key_id is None:
            key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
        return cls(key_id, AESGCM.generate_key(bit_length=256))

    def encoded(self) -> str:
        """``id=<base64>``, the form used in a key specification."""
        return f"{self.key_id}={base64.b64encode(self.material).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext (with its GCM tag), the nonce it was sealed with, and its key id."""

    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str


def associated_data(user_id: str, token_type: str, key_id: str) -> bytes:
    """Canonical, length-prefixed associated data binding a ciphertext to its row."""
    user, kind, key = user_id.encode(), token_type.encode(), key_id.encode()
    return b"".join(
        (
            _AD_PREFIX_FRAMED,
            len(user).to_bytes(4, "big"),
            user,
            len(kind).to_bytes(4, "big"),
            kind,
            len(key).to_bytes(4, "big"),
            key,
        )
    )


class Keyring:
    """Several keys by id, one of them explicitly named primary."""

    __slots__ = ("_aeads", "_keys", "_primary")

    def __init__(self, keys: list[Key] | tuple[Key, ...], *, primary: str) -> None:
        if not keys:
            raise KeyringError("the keyring is empty; set TOKEN_VAULT_KEYS")
        by_id: dict[str, Key] = {}
        for key in keys:
            if key.key_id in by_id:
                raise KeyringError(f"key id {key.key_id!r} appears twice")
            by_id[key.key_id] = key
        if primary not in by_id:
            raise KeyringError(f"primary key {primary!r} is not in the keyring")
        self._keys: Mapping[str, Key] = by_id
        self._aeads = {key_id: AESGCM(key.material) for key_id, key in by_id.items()}
        self._primary = primary

    def __repr__(self) -> str:
        return f"Keyring(key_ids={sorted(self._keys)!r}, primary={self._primary!r})"

    @property
    def primary(self) -> str:
        """Id of the key that seals new ciphertexts."""
        return self._primary

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def key(self, key_id: str) -> Key:
        try:
            return self._keys[key_id]
        except KeyError:
            raise KeyringError(f"no key {key_id!r} in the keyring") from None

    def with_primary(self, key: Key) -> Keyring:
        """A new keyring holding ``key`` as primary plus every key of this one."""
        others = [k for k in self._keys.values() if k.key_id != key.key_id]
        return Keyring([key, *others], primary=key.key_id)

    def without(self, key_id: str) -> Keyring:
        """A new keyring without ``key_id``; the primary cannot be removed."""
        if key_id == self._primary:
            raise KeyringError("the primary key cannot be removed; make another key primary")
        self.key(key_id)
        return Keyring(
            [k for k in self._keys.values() if k.key_id != key_id], primary=self._primary
        )

    def seal(self, plaintext: str, *, user_id: str, token_type: str) -> Sealed:
        """Encrypt with the primary key under a fresh random 96-bit nonce."""
        nonce = os.urandom(NONCE_BYTES)
        ad = associated_data(user_id, token_type, self._primary)
        ciphertext = self._aeads[self._primary].encrypt(nonce, plaintext.encode("utf-8"), ad)
        return Sealed(ciphertext=ciphertext, nonce=nonce, key_id=self._primary)

    def open(
        self, sealed: Sealed, *, user_id: str, token_type: str, entry_id: str | None = None
    ) -> str:
        """Decrypt, or raise the one opaque :class:`DecryptionError`."""
        aead = self._aeads.get(sealed.key_id)
        if aead is None or len(sealed.nonce) != NONCE_BYTES:
            raise DecryptionError(entry_id)
        ad = associated_data(user_id, token_type, sealed.key_id)
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, ad).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError, ValueError):
            raise DecryptionError(entry_id) from None

    # -- configuration -------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: str) -> Keyring:
        """Parse ``primary=ID,ID=BASE64,...`` (commas or whitespace between entries)."""
        primary: str | None = None
        keys: list[Key] = []
        for raw in re.split(r"[,\s]+", spec.strip()):
            if not raw:
                continue
            name, sep, value = raw.partition("=")
            if not sep or not name or not value:
                raise KeyringError("each key entry must read ID=BASE64, and one primary=ID")
            if name == "primary":
                if primary is not None:
                    raise KeyringError("primary= appears more than once")
                primary = value
                continue
            keys.append(Key(name, _decode_key(name, value)))
        if not keys:
            raise KeyringError("no key found; generate one with `token-vault keys generate`")
        if primary is None:
            raise KeyringError("name the primary key explicitly with primary=ID")
        return cls(keys, primary=primary)

    def to_spec(self) -> str:
        """The specification that opens this keyring (contains the keys: handle as a secret)."""
        entries = [self._keys[self._primary].encoded()]
        entries += [k.encoded() for i, k in sorted(self._keys.items()) if i != self._primary]
        return ",".join([f"primary={self._primary}", *entries])


def _decode_key(key_id: str, value: str) -> bytes:
    padded = value + "=" * (-len(value) % 4)
    try:
        if "-" in value or "_" in value:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"key {key_id!r} is not valid base64") from None


def generate_key_spec() -> str:
    """A specification for a keyring of one new key, ready for ``TOKEN_VAULT_KEYS``."""
    return Keyring([key := Key.generate()], primary=key.key_id).to_spec()
