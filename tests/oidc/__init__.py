"""Tests of token_vault.oidc: login, refresh, logout tokens, provider faults."""
