"""The outer guard, on raw ASGI: body limits before parsing, headers, disconnects."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from token_vault.service.guard import Guard


def _scope(method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": method, "path": "/", "headers": headers or []}


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> Any:
        return self.messages[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])


async def reading_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def chunks(*parts: bytes) -> Receive:
    queue = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    return receive


async def test_a_declared_oversize_body_is_refused_before_anything_is_read() -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    sent = Recorder()
    headers = [(b"content-length", str(100 * 1024 * 1024).encode())]
    await Guard(app, max_body=64 * 1024)(_scope(headers=headers), chunks(), sent)
    assert sent.status == 413
    assert not called


async def test_a_streamed_oversize_body_is_cut_off_at_the_limit() -> None:
    sent = Recorder()
    receive = chunks(*[b"x" * 16 * 1024] * 100)  # 1.6 MB, no content-length
    await Guard(reading_app, max_body=64 * 1024)(_scope(), receive, sent)
    assert sent.status == 413
    assert sent.headers[b"content-type"] == b"application/problem+json"


async def test_bodies_within_the_limit_pass_with_security_headers() -> None:
    sent = Recorder()
    await Guard(reading_app, max_body=64 * 1024, https=True)(_scope(), chunks(b"a" * 1000), sent)
    assert sent.status == 200
    assert sent.messages[1]["body"] == b"1000"
    headers = sent.headers
    assert headers[b"x-frame-options"] == b"DENY"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"frame-ancestors 'none'" in headers[b"content-security-policy"]
    assert headers[b"strict-transport-security"].startswith(b"max-age=")


async def test_a_client_that_leaves_cancels_its_handler() -> None:
    cancelled = asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def client_leaves() -> Message:
        await asyncio.sleep(0.1)
        return {"type": "http.disconnect"}

    sent = Recorder()
    await asyncio.wait_for(Guard(slow_app)(_scope("GET"), client_leaves, sent), timeout=5)
    assert cancelled.is_set()
    assert sent.messages == []
