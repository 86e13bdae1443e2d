"""Storage: the SQL the vault runs, per database, and its migrations."""
