"""Tests of token_vault.crypto: the keyring."""
