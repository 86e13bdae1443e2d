"""A real webhook receiver: an HTTP server on a loopback port that checks each delivery's
Standard Webhooks signature and keeps a log with each idempotency key once.

It can be down (nothing listens on its port: connections are refused) and come up later,
and can refuse the first arrival of each event with a 503 (after logging it), so the
sender retries and the same ``webhook-id`` arrives twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import leakcheck
from token_vault.service.devprovider import free_port


class Receiver:
    """The app's webhook endpoint, as a test sees it."""

    def __init__(self, secret: str, *, refuse_first: bool = False) -> None:
        leakcheck.remember_secret(secret)  # the sender must never log or echo it
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.refuse_first = refuse_first
        self.log: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, verified body)
        self._seen: set[str] = set()
        self.arrivals: Counter[str] = Counter()  # webhook-id -> deliveries that arrived
        self.forged = 0  # requests whose signature did not verify
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self._lock:
                self.forged += 1
            return Response(status_code=401)
        key = request.headers["webhook-id"]
        with self._lock:
            self.arrivals[key] += 1
            first = key not in self._seen
            if first:  # idempotent: a repeated key is acknowledged, not logged again
                self._seen.add(key)
                self.log.append((key, payload))
        if first and self.refuse_first:
            return Response(status_code=503)
        return Response(status_code=204)

    def start(self) -> None:
        app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("webhook receiver did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def received(self, event_type: str, user_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The logged events of this type for this user."""
        with self._lock:
            return [
                (key, body)
                for key, body in self.log
                if body["type"] == event_type and body["data"]["user_id"] == user_id
            ]

    def snapshot(self) -> tuple[list[tuple[str, dict[str, Any]]], Counter[str], int]:
        with self._lock:
            return list(self.log), Counter(self.arrivals), self.forged


@contextmanager
def receiving(secret: str, **options: Any) -> Iterator[Receiver]:
    receiver = Receiver(secret, **options)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
