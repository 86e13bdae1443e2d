"""The leak scan itself: it finds a secret in every form, and the watch is running.

The scan of the whole run is not a test: ``tests/conftest.py`` runs it when the session
finishes (see ``tests/support/leakcheck.py``).
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote, quote_plus

import httpx

from tests.support import leakcheck
from token_vault import Key, Keyring, VaultError


def flagged(secrets: set[str], places: list[tuple[str, str]]) -> list[int]:
    """The indexes of the places where the scan finds a secret."""
    return [int(leak.split(":", 1)[0]) for leak in leakcheck.find_leaks(secrets, places)]


def test_the_scan_finds_secrets_in_every_form() -> None:
    secret = "rt-Zm9v?~>> &é!"  # differs in every encoding below, and base64 pads it
    raw = secret.encode()
    every_form = [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]
    assert len(set(every_form)) == 7
    places = [("log", f"refreshing with {form}; done") for form in every_form]
    places += [("error", "nothing here"), ("http", "rt-Zm9v")]  # a prefix is not the secret
    assert flagged({secret}, places) == list(range(7))


def test_the_scan_finds_key_material_as_base64() -> None:
    key = Key.generate("scan-test")  # the watch records the material as the key is made
    assert base64.b64encode(key.material).decode() in leakcheck.SECRETS
    places = [
        ("log", f"key={base64.b64encode(key.material).decode()}"),
        ("log", f"key={base64.urlsafe_b64encode(key.material).decode().rstrip('=')}"),
        ("log", "key=<redacted>"),
    ]
    assert flagged(leakcheck.SECRETS, places) == [0, 1]


def test_short_values_and_clean_places_are_not_leaks() -> None:
    assert leakcheck.find_leaks({"short"}, [("log", "a short line")]) == []
    assert leakcheck.find_leaks(set(), [("log", "anything")]) == []


def test_the_watch_records_in_this_session() -> None:
    assert leakcheck.is_watching()
    before = len(leakcheck.PLACES)
    logging.getLogger("token_vault.test").debug("a debug line")
    VaultError("an error message")
    with httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, text="ok"))) as c:
        c.get("http://127.0.0.1/v1/ping")
    recorded = leakcheck.PLACES[before:]
    assert ("log:token_vault.test", "a debug line") in recorded  # the recorder is live at DEBUG
    assert ("error:VaultError", "an error message") in recorded
    assert ("http:GET /v1/ping", "ok") in recorded
    keyring = Keyring([Key.generate("k1")], primary="k1")
    keyring.seal("rt-watched-while-sealed", user_id="u", token_type="refresh")
    assert "rt-watched-while-sealed" in leakcheck.SECRETS
