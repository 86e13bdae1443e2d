"""token-vault test suite."""
