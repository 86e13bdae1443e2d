"""Errors as ``application/problem+json`` (RFC 9457), statuses from :mod:`token_vault.status`.

Bodies carry a type, a title, a status and a short detail; never a token, a key, a
stack trace or a database message.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from token_vault.errors import ReauthRequiredError, ValidationError, VaultError
from token_vault.status import INTERNAL, http_status

__all__ = ["AuthError", "install_problem_handlers", "problem", "vault_problem"]

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


class AuthError(Exception):
    """A caller's credentials are missing (401) or not enough (403).

    ``error`` is the RFC 6750 code for ``WWW-Authenticate`` (empty when none applies).
    """

    def __init__(self, status: int, detail: str, error: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error = error


def problem(
    status: int, slug: str, title: str, detail: str | None = None, **extra: object
) -> JSONResponse:
    body: dict[str, object] = {
        "type": f"urn:token-vault:problem:{slug}",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"Cache-Control": "no-store"}
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def vault_problem(error: VaultError) -> JSONResponse:
    """The problem response for a vault error (statuses from :mod:`token_vault.status`)."""
    status = http_status(error)
    if status is INTERNAL:
        log.error("unmapped vault error %s", type(error).__name__)
        return problem(status.code, status.slug, status.title)
    extra: dict[str, object] = {}
    if isinstance(error, ValidationError):
        extra["field"] = error.field
    if isinstance(error, ReauthRequiredError):
        extra["reason"] = error.reason
    return problem(status.code, status.slug, status.title, str(error), **extra)


def install_problem_handlers(app: FastAPI) -> None:
    async def on_vault_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, VaultError)
        return vault_problem(error)

    async def on_auth_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, AuthError)
        response = problem(
            error.status,
            "unauthorized" if error.status == 401 else "forbidden",
            "Unauthorized" if error.status == 401 else "Forbidden",
            error.detail,
        )
        challenge = 'Bearer realm="token-vault"'
        if error.error:
            challenge += f', error="{error.error}"'
        response.headers["WWW-Authenticate"] = challenge
        return response

    async def on_request_validation(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in error.errors()]
        return problem(
            400,
            "invalid-input",
            "Invalid input",
            "invalid request: " + ", ".join(sorted({f for f in fields if f})) if fields else None,
        )

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        return problem(error.status_code, "http", str(error.detail))

    async def on_anything(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled %s on %s", type(error).__name__, request.url.path)
        return problem(500, "internal", "Internal error")

    app.add_exception_handler(VaultError, on_vault_error)
    app.add_exception_handler(AuthError, on_auth_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_anything)
