"""Runs last: no token, key or password reached a log line, an error or a response body."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest

from tests.support import leakcheck


def test_the_scan_finds_secrets_in_every_form() -> None:
    secret = "rt-Zm9vYmFyLz8mPSsgc3BhY2U"
    places = [
        ("log", f"refreshing with {secret}"),
        ("log", base64.b64encode(secret.encode()).decode()),
        ("http", quote(secret, safe="")),
        ("error", "nothing here"),
    ]
    assert len(leakcheck.find_leaks({secret}, places)) == 3
    before = len(leakcheck.PLACES)
    logging.getLogger("token_vault.test").debug("a debug line")
    assert len(leakcheck.PLACES) == before + 1  # the recorder is live at DEBUG


def test_no_secret_reached_logs_errors_or_responses() -> None:
    if len(leakcheck.PLACES) < 100:
        pytest.skip("meaningful only after the rest of the suite has run in this session")
    assert leakcheck.find_leaks(leakcheck.SECRETS, leakcheck.PLACES) == []
    kinds = {where.split(":", 1)[0] for where, _ in leakcheck.PLACES}
    assert {"log", "error", "http"} <= kinds
    assert len(leakcheck.SECRETS) > 100
    print(f"scanned {len(leakcheck.PLACES)} places for {len(leakcheck.SECRETS)} secrets")
