"""Traces: request, provider-call and SQL spans, the trace id in the logs, no secret in a span.

The service runs with ``TOKEN_VAULT_TRACES`` on and the SDK's in-memory exporter in place
of the one the setting names. One scenario runs through it (a browser login, ten
concurrent access-token calls for a user due for refresh, a read) and the server stops,
which flushes every span; the tests below read what was exported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.support import ROOT
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, expire_cached_access_token, serve
from tests.support.oidc import write_jwks as write_signing_keys
from token_vault import TokenVault, generate_key_spec
from token_vault.service.app import create_app
from token_vault.service.devprovider import DevProvider, free_port, login
from token_vault.service.logs import JsonFormatter
from token_vault.service.settings import ServiceSettings
from token_vault.service.tracing import RedactingExporter, Tracing
from token_vault.testing.pgcluster import PgCluster

CALLER_ID = "token-vault-caller"
CALLER_SECRET = "caller-secret"
CONCURRENT = 10
USER = "trace-alice"


@dataclass
class Scenario:
    """What one run of the traced service exported and logged, and the secrets it saw."""

    spans: list[ReadableSpan]
    log_lines: list[dict[str, Any]]
    secrets: dict[str, str]
    token_endpoint: str
    provider_refreshes: dict[str, int]
    access_tokens: set[str] = field(default_factory=set)

    def server_spans(self, route: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans
            if s.kind is SpanKind.SERVER and (s.attributes or {}).get("http.route") == route
        ]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture(scope="module")
def scenario(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    name = f"traces_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    database_url = pg_cluster.url_for(name)
    tmp = tmp_path_factory.mktemp("traces")
    write_signing_keys(tmp / "jwks.json")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keys = generate_key_spec()
    session_secret = secrets.token_urlsafe(40)
    with DevProvider(redirect_uris=[f"{base}/auth/callback"], jwks_path=tmp / "jwks.json") as op:
        settings = ServiceSettings(
            mode="dev",
            database_url=database_url,
            keys=keys,
            oidc_issuer=op.issuer,
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=CLIENT_SECRET,
            session_secret=session_secret,
            port=port,
            traces="otlp",  # on; the exporter below stands in for the collector
        )
        exporter = InMemorySpanExporter()
        lines = _Lines()
        logging.getLogger().addHandler(lines)
        try:
            with serve(create_app(settings, span_exporter=exporter), port):
                seen = asyncio.run(_run(base, op, database_url, settings))
        finally:
            logging.getLogger().removeHandler(lines)
        seen.update(
            database_password=pg_cluster.password,
            client_secret=CLIENT_SECRET,
            session_secret=session_secret,
        )
        for n, part in enumerate(keys.split(",")[1:]):
            seen[f"key_{n}"] = part.partition("=")[2]
        yield Scenario(
            spans=list(exporter.get_finished_spans()),
            log_lines=lines.lines,
            secrets={k: v for k, v in seen.items() if not k.startswith("access_token")},
            token_endpoint=op.token_endpoint,
            provider_refreshes=op.stats()["token_requests"],
            access_tokens={v for k, v in seen.items() if k.startswith("access_token")},
        )


async def _run(
    base: str, op: DevProvider, database_url: str, settings: ServiceSettings
) -> dict[str, str]:
    """Log in, make ten concurrent access-token calls that need one refresh, read."""
    seen: dict[str, str] = {}

    def browser_login() -> None:
        with httpx.Client(timeout=30.0) as browser:
            start = browser.get(f"{base}/auth/login")
            at_callback = login(browser, start.headers["location"], USER)
            callback = at_callback.headers["location"]
            seen["code"] = parse_qs(urlsplit(callback).query)["code"][0]
            seen["state"] = parse_qs(urlsplit(callback).query)["state"][0]
            assert browser.get(callback).status_code == 303

    await asyncio.to_thread(browser_login)
    async with httpx.AsyncClient(timeout=30.0) as http:
        caller = await http.post(
            op.token_endpoint,
            data={"grant_type": "client_credentials", "scope": "vault:token vault:read"},
            auth=(CALLER_ID, CALLER_SECRET),
        )
        seen["caller_token"] = caller.json()["access_token"]
        headers = {"Authorization": f"Bearer {seen['caller_token']}"}
        async with await TokenVault.open(database_url, settings.keyring()) as vault:
            entry = await vault.get_refresh_token(USER)
            assert entry is not None
            seen["refresh_token_at_login"] = entry.token
            await expire_cached_access_token(vault, USER)
        op.reset_stats()
        answers = await asyncio.gather(
            *(
                http.post(f"{base}/v1/users/{USER}/access-token", headers=headers)
                for _ in range(CONCURRENT)
            )
        )
        assert [a.status_code for a in answers] == [200] * CONCURRENT
        for n, answer in enumerate(answers):
            seen[f"access_token_{n}"] = answer.json()["access_token"]
        assert (
            await http.get(f"{base}/v1/users/{USER}/tokens", headers=headers)
        ).status_code == 200
        async with await TokenVault.open(database_url, settings.keyring()) as vault:
            entry = await vault.get_refresh_token(USER)
            assert entry is not None
            seen["refresh_token_now"] = entry.token
    return seen


ACCESS_ROUTE = "/v1/users/{user_id:path}/access-token"


def test_concurrent_callers_make_one_provider_span(scenario: Scenario) -> None:
    requests = scenario.server_spans(ACCESS_ROUTE)
    assert len(requests) == CONCURRENT
    traces = {s.context.trace_id for s in requests}
    assert len(traces) == CONCURRENT  # one trace per request
    assert len(scenario.access_tokens) == 1  # they all got the one refreshed token
    refreshes = [
        s
        for s in scenario.spans
        if s.kind is SpanKind.CLIENT
        and s.context.trace_id in traces
        and _url(s) == scenario.token_endpoint
    ]
    assert len(refreshes) == 1
    print(f"{CONCURRENT} concurrent access-token requests: {CONCURRENT} traces, 1 provider span")
    assert scenario.provider_refreshes == {"refresh_token": 1}
    (refresh,) = refreshes
    assert (refresh.attributes or {}).get("http.request.method", "POST") == "POST"


def test_requests_have_sql_spans_inside_them(scenario: Scenario) -> None:
    requests = scenario.server_spans(ACCESS_ROUTE)
    sql = [s for s in scenario.spans if (s.attributes or {}).get("db.system") == "postgresql"]
    traced = {s.context.trace_id for s in requests}
    inside = [s for s in sql if s.context.trace_id in traced]
    assert {s.context.trace_id for s in inside} == traced  # every request ran SQL
    statements = {str((s.attributes or {}).get("db.statement", "")) for s in inside}
    assert any("auth_vault" in text for text in statements)
    assert all("db.statement.parameters" not in (s.attributes or {}) for s in sql)


def test_the_login_callback_is_traced_without_its_code(scenario: Scenario) -> None:
    (callback,) = scenario.server_spans("/auth/callback")
    values = [str(v) for v in (callback.attributes or {}).values()]
    assert any("code=[redacted]" in v for v in values), values


def test_no_token_or_secret_in_any_span(scenario: Scenario) -> None:
    texts = [text for span in scenario.spans for text in _texts(span)]
    assert len(texts) > 100
    wanted = {
        **scenario.secrets,
        **{f"access {n}": t for n, t in enumerate(scenario.access_tokens)},
    }
    found = {name for name, secret in wanted.items() if any(secret in text for text in texts)}
    assert found == set(), f"secrets in spans: {sorted(found)}"
    print(
        f"{len(wanted)} secrets ({', '.join(sorted(scenario.secrets))}, the access token) "
        f"absent from {len(texts)} strings of {len(scenario.spans)} spans"
    )


def test_every_request_log_line_carries_its_trace_id(scenario: Scenario) -> None:
    requests = [line for line in scenario.log_lines if line["logger"] == "token_vault.request"]
    assert len(requests) >= CONCURRENT + 3
    server_traces = {
        format(s.context.trace_id, "032x") for s in scenario.spans if s.kind is SpanKind.SERVER
    }
    assert all(line.get("trace_id") in server_traces for line in requests), requests[:3]
    in_requests = [line for line in scenario.log_lines if "request_id" in line]
    assert all("trace_id" in line for line in in_requests)


def test_spans_are_redacted_on_their_way_out() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter)))
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    with provider.get_tracer("test").start_as_current_span("GET /auth/callback") as span:
        span.set_attribute("url.full", "https://vault.example/auth/callback?code=abc123&state=s1")
        span.set_attribute("url.query", "code=abc123&state=s1")
        span.set_attribute("http.target", "/auth/callback?code=abc123")
        span.set_attribute("http.request.header.authorization", ("Bearer opaque-token-1",))
        span.set_attribute("http.request.header.cookie", ("token_vault_session=xyz",))
        span.set_attribute("db.statement.parameters", "('plain-token',)")
        span.set_attribute("db.statement", "SELECT 1")
        span.record_exception(ValueError(f"bad token {jwt_like}"))
        span.set_status(Status(StatusCode.ERROR, f"postgresql://u:pw-123@db/x {jwt_like}"))
    (out,) = exporter.get_finished_spans()
    attributes = dict(out.attributes or {})
    assert attributes["url.full"] == (
        "https://vault.example/auth/callback?code=[redacted]&state=[redacted]"
    )
    assert attributes["url.query"] == "code=[redacted]&state=[redacted]"
    assert attributes["http.target"] == "/auth/callback?code=[redacted]"
    assert attributes["http.request.header.authorization"] == ("[redacted]",)
    assert attributes["http.request.header.cookie"] == ("[redacted]",)
    assert "db.statement.parameters" not in attributes
    assert attributes["db.statement"] == "SELECT 1"
    text = " ".join(_texts(out))
    for secret in ("abc123", "opaque-token-1", "xyz", "plain-token", "pw-123", jwt_like):
        assert secret not in text


def test_traces_are_off_unless_configured() -> None:
    assert ServiceSettings.model_fields["traces"].default == "off"


def test_without_the_extra_nothing_changes_and_turning_traces_on_says_what_is_missing(
    tmp_path: Path,
) -> None:
    """In a process where OpenTelemetry's SDK, exporters and instrumentations cannot be
    imported: the app builds with traces off, log lines carry no trace id, and traces on
    is refused at start with what to install."""
    program = """
import json, logging, sys
for name in ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter"):
    sys.modules[name] = None  # as if the otel extra were not installed (FastAPI brings the API)
from token_vault.service.logs import JsonFormatter
from token_vault.service.settings import ServiceSettings
from token_vault.service.app import create_app
from token_vault import generate_key_spec
base = dict(mode="dev", keys=generate_key_spec(), oidc_issuer="http://127.0.0.1:9/x",
            oidc_client_id="c", oidc_client_secret="s", session_secret="x" * 40,
            database_url="sqlite:///vault.db")
app = create_app(ServiceSettings(**base))
record = logging.LogRecord("t", logging.INFO, "t.py", 1, "hello", None, None)
line = json.loads(JsonFormatter().format(record))
problems = ServiceSettings(**base, traces="otlp").problems()
print(json.dumps({"line": line, "problems": problems,
                  "instrumented": getattr(app, "_is_instrumented_by_opentelemetry", False)}))
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["line"]["msg"] == "hello"
    assert "trace_id" not in report["line"]
    assert report["instrumented"] is False
    assert any("otel extra" in problem for problem in report["problems"])


def _url(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


def _texts(span: ReadableSpan) -> list[str]:
    """Every string a span carries: name, attributes, events, status, resource."""
    texts = [span.name, span.status.description or ""]
    sources: list[Any] = [span.attributes or {}, span.resource.attributes]
    sources += [event.attributes or {} for event in span.events]
    for attributes in sources:
        for key, value in attributes.items():
            texts.append(str(key))
            texts.extend(str(v) for v in (value if isinstance(value, tuple | list) else [value]))
    return texts


@pytest.mark.parametrize("exporter", ["otlp", "console"])
def test_the_exporters_the_setting_names_are_built(exporter: str) -> None:
    tracing = Tracing.named(exporter)  # nothing is sent until a span ends
    try:
        resource = dict(tracing.provider.resource.attributes)
        assert resource["service.name"] == "token-vault"
    finally:
        tracing.stop()
