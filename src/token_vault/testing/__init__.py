"""Support for users' own tests: a throwaway PostgreSQL cluster (``pgcluster``)."""
