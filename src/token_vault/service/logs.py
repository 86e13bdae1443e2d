"""Structured logs: one JSON line per record, one per request, with a request id, and
with the trace and span ids when the line is written inside a span (traces are on).

Nothing in the vault logs a token, but a filter still masks anything shaped like a JWT or
a bearer credential, so a secret passed by mistake into a message does not reach the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from token_vault.service.metrics import Metrics
from token_vault.vault.audit import AuditContext, audit_context

__all__ = ["JsonFormatter", "configure_logging", "request_logger"]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*)?"  # JWTs
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"  # bearer credentials
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password in URLs
)


def redact(text: str) -> str:
    return _SECRET_SHAPES.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        current = request_id.get()
        if current:
            line["request_id"] = current
        line.update(_trace_fields())
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__  # the type only, never a traceback
        return json.dumps(line, ensure_ascii=False)


def _no_trace() -> dict[str, str]:
    return {}


def _current_trace() -> dict[str, str]:
    """The trace and span ids of the span this line is written in, if any."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


try:  # OpenTelemetry's API comes with the otel extra; without it lines carry no trace id
    from opentelemetry import trace
except ImportError:  # pragma: no cover - the extra is part of the dev install
    _trace_fields = _no_trace
else:
    _trace_fields = _current_trace


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Authlib logs the PKCE code_verifier at DEBUG: never below WARNING.
    for name in ("alembic", "httpx", "httpcore", "httpx2", "httpcore2", "authlib"):
        logging.getLogger(name).setLevel(logging.WARNING)


RequestHandler = Callable[[Request], Awaitable[Response]]
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_logger(metrics: Metrics) -> Callable[[Request, RequestHandler], Awaitable[Response]]:
    """HTTP middleware: a request id, one log line, and the latency histogram."""
    log = logging.getLogger("token_vault.request")

    async def middleware(request: Request, call_next: RequestHandler) -> Response:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid):
            rid = uuid.uuid4().hex
        token = request_id.set(rid)
        client = request.client.host if request.client else None
        audit_token = audit_context.set(AuditContext(request_id=rid, client_address=client))
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            elapsed = time.perf_counter() - started
            # Labels from a fixed set: a route's template, never the raw path.
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = request.method if request.method in _METHODS else "OTHER"
            metrics.request_latency.labels(method, template, str(status)).observe(elapsed)
            log.info(
                "request",
                extra={
                    "fields": {
                        "method": method,
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )
            request_id.reset(token)
            audit_context.reset(audit_token)

    return middleware
