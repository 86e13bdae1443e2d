"""Encryption at rest: the keyring is the only code that touches AES-GCM.

Its data keys may be held wrapped by a key-encryption key in a KMS or an HSM
(:mod:`token_vault.crypto.wrapping`; providers in :mod:`~token_vault.crypto.kms` and
:mod:`~token_vault.crypto.hsm`).
"""

from __future__ import annotations

from token_vault.crypto.keyring import Key, Keyring, Sealed, generate_key_spec
from token_vault.crypto.wrapping import (
    KeyWrapper,
    is_wrapped_spec,
    rewrap_spec,
    unwrap_keyring,
    wrap_keyring,
)

__all__ = [
    "Key",
    "KeyWrapper",
    "Keyring",
    "Sealed",
    "generate_key_spec",
    "is_wrapped_spec",
    "rewrap_spec",
    "unwrap_keyring",
    "wrap_keyring",
]
