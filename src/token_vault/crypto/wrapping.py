"""Data keys wrapped by a key-encryption key (KEK) that never leaves a KMS or an HSM.

With a KEK provider configured, the key specification holds wrapped keys only::

    primary=k2,k2=wrapped:<base64url>,k1=wrapped:<base64url>

At start :func:`unwrap_keyring` asks the provider to unwrap each one; the data keys then
live in the process's memory only, in a :class:`~token_vault.crypto.keyring.Keyring`,
and rows are sealed and opened exactly as with plain keys. Rotating the KEK re-wraps
the data keys (:func:`wrap_keyring` of the unwrapped keyring under the new KEK): not
one row is re-encrypted.

A provider is anything with the small :class:`KeyWrapper` shape: AWS KMS
(:mod:`token_vault.crypto.kms`), PKCS#11 tokens and HSMs (:mod:`token_vault.crypto.hsm`),
and HashiCorp Vault's transit engine would be a third (``wrap`` is
``POST /v1/<mount>/encrypt/<name>``, ``unwrap`` is ``.../decrypt/<name>``, the key id
goes in as ``associated_data``; see ``docs/keys.md``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Protocol, runtime_checkable

from token_vault.crypto.keyring import WRAPPED_PREFIX, Key, Keyring, parse_spec
from token_vault.errors import KeyringError

__all__ = [
    "WRAPPED_PREFIX",
    "KeyWrapper",
    "is_wrapped_spec",
    "rewrap_spec",
    "unwrap_keyring",
    "wrap_keyring",
]


@runtime_checkable
class KeyWrapper(Protocol):
    """A key-encryption key held by a KMS or an HSM, used through its API only.

    ``wrap`` and ``unwrap`` take the data key's id and must bind the wrapped value to
    it (KMS encryption context, GCM associated data, transit ``associated_data``), so a
    wrapped key moved to another id does not unwrap. Both raise :class:`KeyringError`
    with a reason that names no key material; the caller adds which key and which KEK.
    """

    @property
    def kek_id(self) -> str:
        """Names the KEK for messages and ``keys`` output (an ARN, ``token/label``);
        never secret."""
        ...

    def wrap(self, material: bytes, *, key_id: str) -> bytes:
        """The data key ``material``, encrypted under the KEK."""
        ...

    def unwrap(self, blob: bytes, *, key_id: str) -> bytes:
        """The data key that :meth:`wrap` turned into ``blob``."""
        ...


def is_wrapped_spec(spec: str) -> bool:
    """Whether any key of ``spec`` is written ``ID=wrapped:...``."""
    return any(
        value.startswith(WRAPPED_PREFIX)
        for entry in spec.replace(",", " ").split()
        for _, sep, value in [entry.partition("=")]
        if sep
    )


def unwrap_keyring(spec: str, wrapper: KeyWrapper) -> Keyring:
    """The keyring of a spec of wrapped keys, each unwrapped by ``wrapper``.

    Refuses a spec holding any plain key, and raises :class:`KeyringError` naming the
    key and the KEK when the KMS or HSM cannot unwrap one: the vault does not start
    without all of its keys.
    """
    primary, entries = parse_spec(spec)
    plain = sorted(key_id for key_id, value in entries if not value.startswith(WRAPPED_PREFIX))
    if plain:
        raise KeyringError(
            f"key(s) {', '.join(plain)} are not wrapped, yet TOKEN_VAULT_KEK_PROVIDER is "
            "set; a key-encryption key means no plain key in the configuration: run "
            "`token-vault keys wrap` and configure what it prints"
        )
    keys = []
    for key_id, value in entries:
        blob = _decode_blob(key_id, value.removeprefix(WRAPPED_PREFIX))
        try:
            material = wrapper.unwrap(blob, key_id=key_id)
        except KeyringError as exc:
            raise KeyringError(
                f"cannot unwrap data key {key_id!r} with {wrapper.kek_id}: {exc}. The vault "
                "does not start without its keys; check that this host may use the KEK and "
                "that TOKEN_VAULT_KEYS was wrapped by it"
            ) from None
        keys.append(Key(key_id, material))
    return Keyring(keys, primary=primary)


def wrap_keyring(keyring: Keyring, wrapper: KeyWrapper) -> str:
    """The specification of ``keyring`` with every key wrapped by ``wrapper``.

    It holds no key material, only what the KEK can turn back into it. Each wrapped key
    is unwrapped again and compared before it is written out, so a specification this
    returns is known to open. The primary comes first, then the other keys by id, as in
    :meth:`Keyring.to_spec`.
    """
    others = sorted(keyring.key_ids - {keyring.primary})
    entries = []
    for key_id in [keyring.primary, *others]:
        material = keyring.key(key_id).material
        try:
            blob = wrapper.wrap(material, key_id=key_id)
            same = hmac.compare_digest(wrapper.unwrap(blob, key_id=key_id), material)
        except KeyringError as exc:
            raise KeyringError(
                f"cannot wrap data key {key_id!r} with {wrapper.kek_id}: {exc}"
            ) from None
        if not same:
            raise KeyringError(f"{wrapper.kek_id} did not unwrap what it wrapped ({key_id!r})")
        encoded = base64.urlsafe_b64encode(blob).decode("ascii").rstrip("=")
        entries.append(f"{key_id}={WRAPPED_PREFIX}{encoded}")
    return ",".join([f"primary={keyring.primary}", *entries])


def rewrap_spec(spec: str, current: KeyWrapper, new: KeyWrapper) -> str:
    """``spec`` re-wrapped from the ``current`` KEK to the ``new`` one.

    The data keys stay the same, and so does every stored row: nothing is re-encrypted.
    """
    return wrap_keyring(unwrap_keyring(spec, current), new)


def _decode_blob(key_id: str, value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise KeyringError(f"wrapped key {key_id!r} is not valid base64url") from None
