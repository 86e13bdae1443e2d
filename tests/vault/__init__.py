"""Tests of token_vault.vault: the vault's reads, writes, input checks and key rotation."""
