"""The ``token-vault`` command line."""

from __future__ import annotations

from token_vault.cli.app import app, main

__all__ = ["app", "main"]
