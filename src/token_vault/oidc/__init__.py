"""OpenID Connect integration: the provider client, fresh access tokens, login routes."""
