"""Tests of token_vault.cli: the `token-vault` command."""
