"""Tests of token_vault.service: the HTTP service, its processes and its pages."""
