"""Callers of the API: other backend services holding a bearer token from the provider.

The token is a JWT the provider issued to a service account (client-credentials grant),
checked against the provider's JWKS: signature, ``iss``, ``aud``, ``exp``, and the scope
each operation requires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError

from token_vault.errors import ProviderError, ProviderUnavailableError
from token_vault.oidc.provider import OpenIDProvider
from token_vault.service.problem import AuthError

__all__ = ["Caller", "CallerVerifier"]

log = logging.getLogger(__name__)

ACCESS_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated calling service."""

    client_id: str
    scopes: frozenset[str]


class CallerVerifier:
    """Checks ``Authorization: Bearer`` tokens of calling services."""

    def __init__(self, provider: OpenIDProvider, *, audience: str) -> None:
        self._provider = provider
        self._audience = audience

    async def verify(self, authorization: str | None, scope: str) -> Caller:
        if not authorization:
            raise AuthError(401, "a bearer token is required", "")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise AuthError(401, "a bearer token is required", "invalid_request")
        try:
            await self._provider.key_set()
        except ProviderError as exc:
            # Not the caller's fault: the provider's discovery or keys cannot be had.
            log.error("caller tokens cannot be checked: %s", exc)
            raise ProviderUnavailableError(
                "the identity provider's keys are unavailable; try again later"
            ) from None
        try:
            decoded = await self._provider.decode_jwt(token.strip(), ACCESS_TOKEN_ALGORITHMS)
        except ProviderUnavailableError:
            raise
        except ProviderError:
            raise AuthError(401, "the bearer token is not valid", "invalid_token") from None
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self._provider.settings.issuer},
            exp={"essential": True},
            leeway=30,
        )
        try:
            registry.validate(decoded.claims)
        except JoseError:
            raise AuthError(401, "the bearer token is not valid", "invalid_token") from None
        audience = decoded.claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self._audience not in audiences:
            raise AuthError(403, "the bearer token is for another audience", "invalid_token")
        raw_scope = decoded.claims.get("scope", "")
        scopes = frozenset(raw_scope.split()) if isinstance(raw_scope, str) else frozenset()
        if scope not in scopes:
            raise AuthError(403, f"this operation requires the scope {scope}", "insufficient_scope")
        client = decoded.claims.get("client_id") or decoded.claims.get("sub") or "unknown"
        return Caller(client_id=str(client), scopes=scopes)
