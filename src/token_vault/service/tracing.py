"""Traces (OpenTelemetry): off unless ``TOKEN_VAULT_TRACES`` names where spans go.

``otlp`` sends them over OTLP/HTTP to the collector that the standard
``OTEL_EXPORTER_OTLP_*`` variables name (``OTEL_SERVICE_NAME`` renames the service);
``console`` prints them. Both need the ``otel`` extra (``pip install 'oidc-token-vault[otel]'``);
this module is imported only when the setting is on, so without it nothing changes.

What is traced:

* every request to the service (FastAPI's instrumentation), except the health, readiness
  and metrics probes;
* every call to the OpenID provider (httpx's instrumentation, on the provider's own
  client only, so the process's other HTTP clients are left alone);
* every SQL statement (asyncpg's instrumentation, which patches asyncpg for the whole
  process while the service runs): the statement's text, never its parameters.

No token or secret reaches a span attribute. The instrumentations record no bodies and
no headers unless ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` asks them to; on top of
that every span passes :func:`redacted` on its way out: query-string values (an
authorization ``code``, a ``state``) are replaced, credential headers are replaced,
statement parameters are dropped, and anything shaped like a JWT, a bearer credential or
a password in a URL is masked, as in the logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status

from token_vault import __version__
from token_vault.errors import ConfigurationError
from token_vault.service.logs import redact

__all__ = ["EXPORTERS", "RedactingExporter", "Tracing", "redacted"]

EXPORTERS = ("otlp", "console")
MASK = "[redacted]"

# One regular expression (the instrumentation splits its list on commas), on the full URL.
_NOT_TRACED = r"^[a-z]+://[^/]+/(?:healthz|readyz|metrics)$"
_URL_KEYS = frozenset({"http.url", "url.full", "http.target"})
_QUERY_KEYS = frozenset({"url.query"})
_DROPPED_KEYS = frozenset({"db.statement.parameters"})
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy_authorization", "cookie", "set_cookie"})
_HEADER_PREFIXES = ("http.request.header.", "http.response.header.")


class Tracing:
    """A tracer provider for one service, and the instrumentation it puts in place.

    :meth:`instrument_app` when the app is built, :meth:`instrument_client` on the
    provider's client, :meth:`start` when the service starts (asyncpg), :meth:`stop` when
    it stops (flushes what is left).
    """

    def __init__(self, exporter: SpanExporter) -> None:
        attributes: dict[str, str] = {"service.version": __version__}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = "token-vault"
        self.provider: TracerProvider = TracerProvider(resource=Resource.create(attributes))
        self.provider.add_span_processor(BatchSpanProcessor(RedactingExporter(exporter)))
        self._asyncpg: AsyncPGInstrumentor | None = None

    @classmethod
    def named(cls, exporter: str) -> Tracing:
        """Tracing to the exporter ``TOKEN_VAULT_TRACES`` names (``otlp`` or ``console``)."""
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return cls(OTLPSpanExporter())
        if exporter == "console":
            return cls(ConsoleSpanExporter())
        raise ConfigurationError(f"TOKEN_VAULT_TRACES: unknown exporter {exporter!r}")

    def instrument_app(self, app: FastAPI) -> None:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls=_NOT_TRACED
        )

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def start(self) -> None:
        """Trace asyncpg's statements (for the whole process) until :meth:`stop`."""
        instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
        instrumentor.instrument(tracer_provider=self.provider)
        self._asyncpg = instrumentor

    def force_flush(self) -> None:
        self.provider.force_flush()

    def stop(self) -> None:
        if self._asyncpg is not None:
            self._asyncpg.uninstrument()
            self._asyncpg = None
        self.provider.shutdown()


class RedactingExporter(SpanExporter):
    """Passes every span through :func:`redacted` before the real exporter sees it."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def redacted(span: ReadableSpan) -> ReadableSpan:
    """A copy of ``span`` with query values, credential headers, statement parameters
    and secret-shaped text masked."""
    status = span.status
    if status.description:
        status = Status(status.status_code, redact(status.description))
    return ReadableSpan(
        name=redact(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_attributes(span.attributes),
        events=[
            Event(event.name, _attributes(event.attributes), event.timestamp)
            for event in span.events
        ],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in _DROPPED_KEYS:
            continue
        if key.startswith(_HEADER_PREFIXES):
            name = key.rsplit(".", 1)[-1].replace("-", "_").lower()
            if name in _CREDENTIAL_HEADERS:
                clean[key] = (MASK,)
                continue
        clean[key] = _value(key, value)
    return clean


def _value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if key in _QUERY_KEYS:
            value = _mask_query(value)
        elif key in _URL_KEYS and "?" in value:
            base, _, query = value.partition("?")
            value = f"{base}?{_mask_query(query)}"
        return redact(value)
    if isinstance(value, tuple | list):
        return tuple(_value(key, item) for item in value)
    return value


def _mask_query(query: str) -> str:
    """``code=abc&state=xyz`` -> ``code=[redacted]&state=[redacted]``."""
    query = query.partition("#")[0]
    return "&".join(
        f"{part.partition('=')[0]}={MASK}" if "=" in part else part for part in query.split("&")
    )
