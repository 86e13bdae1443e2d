"""Tests of token_vault.storage: URLs, the connection pool, migrations, what is at rest."""
