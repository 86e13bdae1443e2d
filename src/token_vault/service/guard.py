"""The service's outer guard: body size limit, security headers, client disconnects.

Plain ASGI middleware, so it acts before any route reads or parses a body:

* a request body larger than the limit (64 KiB by default) is refused with 413 before it
  is read, whether it says its length or streams it;
* every response carries ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  a ``frame-ancestors 'none'`` CSP, ``Referrer-Policy: same-origin``, and HSTS when the
  service is served over https;
* when the client goes away, the handler working for it is cancelled instead of
  running on for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Guard"]

_PROBLEM = "application/problem+json"
_BODYLESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: ASGIApp, *, max_body: int = 64 * 1024, https: bool = False) -> None:
        self.app = app
        self.max_body = max_body
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", b"frame-ancestors 'none'"),
            (b"referrer-policy", b"same-origin"),
        ]
        if https:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await self._refuse(send)
            return
        seen = 0
        disconnected = asyncio.Event()
        body_read = asyncio.Event()
        if declared == b"0" or (declared is None and scope["method"] in _BODYLESS):
            body_read.set()
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
                if not message.get("more_body", False):
                    body_read.set()
            elif message["type"] == "http.disconnect":
                disconnected.set()
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, limited_receive, secured_send))
        watcher = asyncio.ensure_future(self._watch(receive, body_read, disconnected, handler))
        try:
            await handler
        except _TooLarge:
            if not started:
                await self._refuse(send)
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(
        self,
        receive: Receive,
        body_read: asyncio.Event,
        disconnected: asyncio.Event,
        handler: asyncio.Future[None],
    ) -> None:
        """Cancel the handler when the client disconnects. Once the body is read (or
        there is none), the only message left to receive is the disconnect."""
        await body_read.wait()
        while not disconnected.is_set():
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
        handler.cancel()

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "urn:token-vault:problem:too-large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"bodies are limited to {self.max_body} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", _PROBLEM.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *self.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
