"""Operations endpoints: liveness, readiness, metrics, and back-channel logout."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from token_vault.service.problem import problem
from token_vault.service.state import ServicesDep
from token_vault.storage import migrate

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    """The database answers and its schema is at the newest revision."""
    try:
        current = await migrate.current_revision(services.settings.database())
    except Exception as exc:  # any failure to answer means "not ready"
        return problem(503, "not-ready", "Service not ready", f"database: {type(exc).__name__}")
    head = migrate.head_revision()
    if current != head:
        return problem(
            503, "not-ready", "Service not ready", f"schema at {current or 'base'}, expected {head}"
        )
    return JSONResponse({"status": "ready", "revision": current})


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics."""
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


@router.post("/backchannel-logout", include_in_schema=True)
async def backchannel_logout(request: Request, services: ServicesDep) -> Response:
    """OpenID Back-Channel Logout 1.0 (form field ``logout_token``)."""
    return await services.relying_party.backchannel_logout(request)
