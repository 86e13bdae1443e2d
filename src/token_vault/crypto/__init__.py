"""Encryption at rest: the keyring is the only code that touches AES-GCM."""

from __future__ import annotations

from token_vault.crypto.keyring import Key, Keyring, Sealed, generate_key_spec

__all__ = ["Key", "Keyring", "Sealed", "generate_key_spec"]
