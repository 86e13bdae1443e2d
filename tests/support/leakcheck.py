"""Watches the whole test session for secrets where they must never appear.

Started by ``tests/conftest.py`` when pytest configures the run, and scanned when the
session finishes (``pytest_sessionfinish``), whichever tests ran and in whatever order:

* every refresh/offline token the vault seals, every key's material and every database
  password are recorded as secrets (by wrapping the keyring's ``seal``, ``Key`` creation
  and the test cluster);
* every log record (root logger at DEBUG, with exception text), every message of a
  ``VaultError`` and every body of a response the project's own apps send to an HTTP
  client in this process are recorded as places to look.

:func:`scan` looks for the secrets in the places, raw, base64 (standard and URL-safe,
with and without padding) and URL-encoded. A leak fails the run.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick
import httpx

from token_vault import errors
from token_vault.crypto import keyring as keyring_module

SECRETS: set[str] = set()
PLACES: list[tuple[str, str]] = []  # (where, text)
_WATCH: list[ExitStack] = []  # the running watch, if any

_MIN_LENGTH = 8  # shorter values ("t", "a") would match by chance


def remember_secret(value: str | bytes) -> None:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(text) >= _MIN_LENGTH:
        SECRETS.add(text)
    if isinstance(value, bytes):
        SECRETS.add(base64.b64encode(value).decode())
        SECRETS.add(base64.urlsafe_b64encode(value).decode().rstrip("="))


def forms(secret: str) -> set[str]:
    raw = secret.encode("utf-8", "surrogatepass")
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        found.update({text, text.rstrip("=")})
    return {f for f in found if len(f) >= _MIN_LENGTH}


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is itself worth seeing
            text = str(record.msg)
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        PLACES.append((f"log:{record.name}", text))


def _is_own_app(response: httpx.Response) -> bool:
    path = response.request.url.path
    return response.request.url.host == "127.0.0.1" and not (
        path.startswith("/realms/") or path.startswith("/__test__/")
    )


@contextmanager
def watching() -> Iterator[None]:
    """Install every recorder for the duration (the test session)."""
    originals: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, make(original))

    def seal(original: Any) -> Any:
        def wrapper(
            self: Any, plaintext: str, *, user_id: str, token_type: str, **more: Any
        ) -> Any:
            if token_type in ("refresh", "offline"):
                remember_secret(plaintext)
            return original(self, plaintext, user_id=user_id, token_type=token_type, **more)

        return wrapper

    def key_init(original: Any) -> Any:
        def wrapper(self: Any) -> None:
            original(self)
            remember_secret(self.material)

        return wrapper

    def error_init(original: Any) -> Any:
        def wrapper(self: BaseException, *args: Any) -> None:
            original(self, *args)
            PLACES.append((f"error:{type(self).__name__}", " ".join(map(str, args))))

        return wrapper

    def client_send(original: Any) -> Any:
        def wrapper(self: Any, request: httpx.Request, **kwargs: Any) -> Any:
            response = original(self, request, **kwargs)
            if _is_own_app(response) and not kwargs.get("stream"):
                PLACES.append((f"http:{request.method} {request.url.path}", response.text))
            return response

        return wrapper

    def async_send(original: Any) -> Any:
        async def wrapper(self: Any, request: httpx.Request, **kwargs: Any) -> Any:
            response = await original(self, request, **kwargs)
            if _is_own_app(response) and not kwargs.get("stream"):
                await response.aread()
                PLACES.append((f"http:{request.method} {request.url.path}", response.text))
            return response

        return wrapper

    patch(keyring_module.Keyring, "seal", seal)
    patch(keyring_module.Key, "__post_init__", key_init)
    patch(errors.VaultError, "__init__", error_init)
    patch(httpx.Client, "send", client_send)
    patch(httpx.AsyncClient, "send", async_send)
    recorder = _Recorder(level=logging.DEBUG)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(recorder)
        root.setLevel(previous_level)
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def find_leaks(secrets: set[str], places: list[tuple[str, str]]) -> list[str]:
    """The places where any form of any secret appears (the secret is not repeated).

    One Aho-Corasick automaton over every form of every secret, one pass over each place.
    """
    automaton = ahocorasick.Automaton()
    for secret in secrets:
        for form in forms(secret):
            automaton.add_word(form, len(secret))
    if not len(automaton):
        return []
    automaton.make_automaton()
    leaks = []
    for n, (where, text) in enumerate(places):
        for _, length in automaton.iter(text):
            leaks.append(f"{n}:{where}: a secret of {length} chars")
            break
    return leaks


def start() -> None:
    """Install every recorder until :func:`stop` (for the test session)."""
    if not _WATCH:
        stack = ExitStack()
        stack.enter_context(watching())
        _WATCH.append(stack)


def stop() -> None:
    """Remove the recorders; what they recorded stays in SECRETS and PLACES."""
    while _WATCH:
        _WATCH.pop().close()


def is_watching() -> bool:
    return bool(_WATCH)


@dataclass(frozen=True, slots=True)
class Scan:
    """The outcome of one scan: how much was looked at, and where secrets were found."""

    places: int
    secrets: int
    leaks: list[str]
    watching: bool

    @property
    def failed(self) -> bool:
        return bool(self.leaks) or not self.watching

    def summary(self) -> str:
        found = f"secrets found in {len(self.leaks)} place(s)" if self.leaks else "no leaks"
        line = f"scanned {self.places} places for {self.secrets} secrets: {found}"
        if not self.watching:
            line += " (the leak watch was not running at the end of the session)"
        return line


def scan() -> Scan:
    """Scan every place recorded so far for every secret recorded so far."""
    return Scan(len(PLACES), len(SECRETS), find_leaks(SECRETS, PLACES), is_watching())
