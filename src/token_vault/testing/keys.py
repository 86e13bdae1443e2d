"""Keyrings for tests: fixed (the same every run, from a seed) or fresh."""

from __future__ import annotations

import hashlib

from token_vault.crypto.keyring import Key, Keyring

__all__ = ["fixed_keyring"]


def fixed_keyring(seed: str = "token-vault tests", *key_ids: str) -> Keyring:
    """A keyring derived from ``seed``: the same keys every run, never for production.

    With ``key_ids`` (for example ``"old", "new"``) it holds one key per id, the last
    one primary; without, a single key ``"test"``.
    """
    ids = key_ids or ("test",)
    keys = [Key(key_id, hashlib.sha256(f"{seed}\0{key_id}".encode()).digest()) for key_id in ids]
    return Keyring(keys, primary=ids[-1])
