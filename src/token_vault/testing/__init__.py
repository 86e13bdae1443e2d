"""Support for tests and dev mode: a throwaway PostgreSQL cluster (``pgcluster``) and
the Keycloak-like dev OpenID provider (``devprovider``)."""
