"""Refresh-token lifetimes: from the provider, else the JWT's exp, else unknown."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from token_vault.oidc.lifetime import NEVER, LifetimeSource, refresh_lifetime

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


def test_refresh_expires_in_wins_and_zero_means_never() -> None:
    told = refresh_lifetime(1800, _jwt({"exp": 1}), NOW)
    assert told.source is LifetimeSource.PROVIDER
    assert told.expires_at == NOW + timedelta(seconds=1800)
    offline = refresh_lifetime(0, None, NOW)
    assert (offline.expires_at, offline.source) == (NEVER, LifetimeSource.NONE)


def test_the_exp_of_a_jwt_refresh_token_is_used_when_the_response_is_silent() -> None:
    exp = NOW + timedelta(hours=7)
    found = refresh_lifetime(None, _jwt({"exp": exp.timestamp()}), NOW)
    assert (found.expires_at, found.source) == (exp, LifetimeSource.JWT)


@pytest.mark.parametrize(
    "token",
    [
        "opaque-refresh-token",
        "a.b.c",
        _jwt(["not", "an", "object"]),
        _jwt({"exp": "soon"}),
        _jwt({"exp": True}),
        _jwt({"exp": 10**20}),
        _jwt({"sub": "no exp"}),
    ],
)
def test_anything_else_is_unknown(token: str) -> None:
    unknown = refresh_lifetime(None, token, NOW)
    assert (unknown.expires_at, unknown.source) == (None, LifetimeSource.UNKNOWN)


@pytest.mark.parametrize("bad", [-5, "1800", True, None])
def test_a_malformed_refresh_expires_in_is_ignored(bad: object) -> None:
    assert refresh_lifetime(bad, None, NOW).source is LifetimeSource.UNKNOWN
