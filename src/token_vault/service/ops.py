"""Operations endpoints: liveness, readiness, metrics.

Back-channel logout is one of the login routes (``/auth/backchannel-logout``).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from token_vault.errors import ProviderError
from token_vault.service.problem import problem
from token_vault.service.state import ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    """The database answers (through the vault's own pool), its schema is current, and
    the identity provider's discovery document was read and names the configured issuer."""
    try:
        schema = await services.vault.schema_status()
    except Exception as exc:  # any failure to answer means "not ready"
        return problem(503, "not-ready", "Service not ready", f"database: {type(exc).__name__}")
    if not schema.is_current:
        detail = f"schema at {schema.current or 'base'}, expected {schema.head}"
        return problem(503, "not-ready", "Service not ready", detail)
    try:
        await services.provider.metadata()
    except ProviderError as exc:
        return problem(503, "not-ready", "Service not ready", f"identity provider: {exc}")
    return JSONResponse({"status": "ready", "revision": schema.current})


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics."""
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
