"""``create_app(settings)``: the service, built by a factory (no import-time singletons)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from token_vault import __version__
from token_vault.errors import ProviderError
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.keepalive import Refresher
from token_vault.oidc.provider import OpenIDProvider
from token_vault.oidc.routes import LoginSettings, RelyingParty, login_routes
from token_vault.service import api, ops, pages
from token_vault.service.caller import CallerVerifier
from token_vault.service.guard import Guard
from token_vault.service.logs import request_logger
from token_vault.service.metrics import Metrics
from token_vault.service.problem import install_problem_handlers
from token_vault.service.settings import ServiceSettings
from token_vault.service.state import Services, get_services
from token_vault.service.webhooks import Deliverer
from token_vault.vault.core import TokenVault

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from token_vault.service.tracing import Tracing

__all__ = ["create_app", "refresher"]

log = logging.getLogger(__name__)

AUTH_PREFIX = "/auth"
_PROVIDER_CHECK_SECONDS = 5.0


def refresher(
    vault: TokenVault, access: AccessTokens, settings: ServiceSettings, metrics: Metrics | None
) -> Refresher:
    """The keep-alive refresher these settings describe."""
    return Refresher(
        vault,
        access,
        window=timedelta(seconds=settings.refresher_window_seconds),
        concurrency=settings.refresher_concurrency,
        rate=settings.refresher_rate,
        observer=metrics.observe_keepalive if metrics is not None else None,
    )


async def keep_alive(
    vault: TokenVault, access: AccessTokens, settings: ServiceSettings, metrics: Metrics
) -> None:
    every = timedelta(seconds=settings.refresher_interval_seconds)
    await refresher(vault, access, settings, metrics).run(every=every)


def create_app(settings: ServiceSettings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the service; raises :class:`ConfigurationError` if the settings are not enough.

    With ``TOKEN_VAULT_TRACES`` on, spans go to the exporter it names, or to
    ``span_exporter`` when given (tests pass the SDK's in-memory exporter).
    """
    settings.require_valid()
    tracing = _tracing(settings, span_exporter)
    if settings.uses_insecure_http():
        log.warning(
            "INSECURE: production on plain http (TOKEN_VAULT_INSECURE_HTTP=1): session "
            "cookies and the provider's keys travel unprotected; for loopback tests only"
        )
    metrics = Metrics()
    policy = settings.policy()  # read once: the file, if any, is read at start only
    if not policy.callers:
        log.warning("no caller policy (TOKEN_VAULT_CALLER_POLICY): the API refuses every caller")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if tracing is not None:
            tracing.start()
        vault = await TokenVault.open(
            settings.database(),
            settings.keyring(),
            pool_size=settings.pool_size,
            events=settings.events_enabled,
        )
        provider = OpenIDProvider(
            settings.provider(),
            instrument=tracing.instrument_client if tracing is not None else None,
        )
        try:
            await asyncio.wait_for(provider.metadata(), timeout=_PROVIDER_CHECK_SECONDS)
        except (ProviderError, TimeoutError) as exc:  # said now; /readyz says it too
            log.error("the identity provider is not usable yet: %s", exc or "no answer")
        access = AccessTokens(
            vault,
            provider,
            margin=settings.margin,
            lease=timedelta(seconds=settings.refresh_lease_seconds),
            observer=metrics.observe_refresh,
            audit=True,
        )
        login = LoginSettings(
            base_url=settings.base_url,
            prefix=AUTH_PREFIX,
            provider_name=settings.oidc_provider_name,
            default_refresh_ttl=timedelta(days=settings.default_refresh_ttl_days),
        )
        app.state.services = Services(
            settings=settings,
            vault=vault,
            provider=provider,
            access_tokens=access,
            relying_party=RelyingParty(
                vault, provider, access, login, on_store=metrics.upserts.inc
            ),
            callers=CallerVerifier(
                provider,
                audience=settings.api_audience,
                max_lifetime=settings.caller_token_max_lifetime_seconds,
                introspection_endpoint=settings.oidc_introspection_endpoint,
                introspection_auth=settings.introspection_auth(),
            ),
            policy=policy,
            metrics=metrics,
        )
        keeper = None
        if settings.refresher:
            keeper = asyncio.create_task(
                keep_alive(vault, access, settings, metrics), name="token-vault-refresher"
            )
        deliverer = delivering = None
        if settings.events_enabled and settings.webhook_deliver:
            deliverer = Deliverer(vault, settings.delivery_policy())
            vault.on_event(deliverer.wake)
            delivering = asyncio.create_task(deliverer.run(), name="token-vault-events")
        try:
            yield
        finally:
            for task in (keeper, delivering):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if deliverer is not None:
                await deliverer.close()
            await app.state.services.callers.close()
            await provider.close()
            await vault.close()
            if tracing is not None:
                tracing.stop()

    production = settings.mode == "production"
    app = FastAPI(
        title="token-vault",
        version=__version__,
        # The interactive docs load their scripts from a CDN: off in production.
        docs_url=None if production else "/docs",
        redoc_url=None,
        summary="Users' OpenID Connect refresh tokens, kept encrypted; fresh access tokens "
        "for other services.",
        lifespan=lifespan,
    )
    assert settings.session_secret is not None
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret.get_secret_value(),
        session_cookie="token_vault_session",
        same_site="lax",
        https_only=settings.base_url.startswith("https://"),
    )
    app.middleware("http")(request_logger(metrics))
    install_problem_handlers(app)
    app.add_middleware(
        Guard, max_body=settings.max_body_bytes, https=settings.base_url.startswith("https://")
    )
    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(pages.router)
    app.router.routes.extend(
        login_routes(lambda request: get_services(request).relying_party, prefix=AUTH_PREFIX)
    )
    if tracing is not None:
        tracing.instrument_app(app)
    return app


def _tracing(settings: ServiceSettings, exporter: SpanExporter | None) -> Tracing | None:
    """The service's tracing, or ``None`` when ``TOKEN_VAULT_TRACES`` is off."""
    if settings.traces == "off":
        return None
    from token_vault.service.tracing import Tracing  # the otel extra, checked by problems()

    return Tracing(exporter) if exporter is not None else Tracing.named(settings.traces)
