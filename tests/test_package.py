"""The front door: `token_vault.__all__` is sorted, complete and importable."""

from __future__ import annotations

import token_vault
from token_vault import errors


def test_all_is_sorted_and_importable() -> None:
    assert token_vault.__all__ == sorted(token_vault.__all__)
    for name in token_vault.__all__:
        assert getattr(token_vault, name) is not None


def test_every_error_is_exported_and_derives_from_vault_error() -> None:
    for name in errors.__all__:
        error = getattr(errors, name)
        assert issubclass(error, token_vault.VaultError)
        assert name in token_vault.__all__
