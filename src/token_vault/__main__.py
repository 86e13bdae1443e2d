"""``python -m token_vault``: the same as the ``token-vault`` command."""

from __future__ import annotations

from token_vault.cli import main

main()
