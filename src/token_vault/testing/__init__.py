"""Test-support helpers for token-vault (dev OpenID provider, fixtures)."""
