"""Callers of the API: other backend services holding an access token from the provider.

A token is accepted only as an *access token*: an RFC 9068 JWT (``typ: at+jwt``), or a
plain JWT that carries none of the marks of an ID, refresh or logout token, checked
against the provider's JWKS (signature, ``iss``, ``aud``, ``exp``, a maximum lifetime);
or an opaque token the provider's RFC 7662 introspection endpoint calls active. Scopes
come from ``scope`` (split on spaces only) or an ``scp`` array. Verified callers are
cached by token hash until the token expires (and at most a short while for
introspected ones). Which caller may do what for whom is the policy's business
(:mod:`token_vault.service.policy`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError

from token_vault.errors import ProviderError, ProviderUnavailableError
from token_vault.oidc.provider import OpenIDProvider
from token_vault.service.problem import AuthError

__all__ = ["ACCESS_TOKEN_ALGORITHMS", "Caller", "CallerVerifier"]

log = logging.getLogger(__name__)

ACCESS_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")
_ACCESS_TYPES = {"at+jwt", "application/at+jwt"}
# Claims that mark a JWT as something other than an access token.
_NOT_ACCESS = {
    "typ": {"id", "refresh", "offline", "logout", "logout+jwt"},
    "token_type": {"refresh", "refresh_token", "id", "id_token"},
    "token_use": {"id", "refresh"},
}
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated calling service."""

    client_id: str
    scopes: frozenset[str]


def _invalid(detail: str = "the bearer token is not valid") -> AuthError:
    return AuthError(401, detail, "invalid_token")


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        found.update(s for s in scope.split(" ") if s)
    scp = claims.get("scp")
    if isinstance(scp, list):
        found.update(s for s in scp if isinstance(s, str))
    elif isinstance(scp, str):
        found.update(s for s in scp.split(" ") if s)
    return frozenset(found)


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and all(token.split("."))


class CallerVerifier:
    """Checks ``Authorization: Bearer`` tokens of calling services."""

    def __init__(
        self,
        provider: OpenIDProvider,
        *,
        audience: str,
        max_lifetime: float = 24 * 3600,
        introspection_endpoint: str | None = None,
        introspection_auth: tuple[str, str] | None = None,
        introspection_cache_seconds: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._provider = provider
        self._audience = audience
        self._max_lifetime = max_lifetime
        self._introspection_endpoint = introspection_endpoint
        self._introspection_auth = introspection_auth
        self._introspection_cache = introspection_cache_seconds
        self._http = http or httpx.AsyncClient(timeout=provider.settings.timeout)
        self._cache: OrderedDict[str, tuple[Caller, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[Caller, float]]] = {}

    async def close(self) -> None:
        await self._http.aclose()

    async def verify(self, authorization: str | None, scope: str) -> Caller:
        """The caller, or :class:`AuthError` (401: who are you; 403: not allowed)."""
        if not authorization:
            raise AuthError(401, "a bearer token is required", "")
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AuthError(401, "a bearer token is required", "invalid_request")
        caller = await self._authenticate(token)
        if scope not in caller.scopes:
            raise AuthError(403, f"this operation requires the scope {scope}", "insufficient_scope")
        return caller

    async def _authenticate(self, token: str) -> Caller:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        now = time.time()
        if cached is not None and cached[1] > now:
            return cached[0]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._check(token))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        caller, until = await asyncio.shield(task)
        self._cache[key] = (caller, until)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return caller

    async def _check(self, token: str) -> tuple[Caller, float]:
        if _is_jwt(token):
            claims = await self._jwt_claims(token)
            until = float(claims["exp"])
        else:
            claims = await self._introspect(token)
            exp = claims.get("exp")
            until = time.time() + self._introspection_cache
            if isinstance(exp, int | float):
                until = min(until, float(exp))
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        # RFC 7662 makes aud optional: an introspected token without one is judged by
        # its client id alone (the caller policy names every client it lets in).
        unstated = audience is None and not _is_jwt(token)
        if self._audience not in audiences and not unstated:
            raise _invalid("the bearer token is for another audience")
        client = claims.get("client_id") or claims.get("azp")
        if not isinstance(client, str) or not client:
            raise _invalid("the bearer token names no client")
        return Caller(client_id=client, scopes=_scopes(claims)), until

    async def _keys_available(self) -> None:
        try:
            await self._provider.key_set()
        except ProviderError as exc:
            # Not the caller's fault: the provider's discovery or keys cannot be had.
            log.error("caller tokens cannot be checked: %s", exc)
            raise ProviderUnavailableError(
                "the identity provider's keys are unavailable; try again later"
            ) from None

    async def _jwt_claims(self, token: str) -> dict[str, Any]:
        await self._keys_available()
        try:
            decoded = await self._provider.decode_jwt(token, ACCESS_TOKEN_ALGORITHMS)
        except ProviderUnavailableError:
            raise
        except ProviderError:
            raise _invalid() from None
        claims = dict(decoded.claims)
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self._provider.settings.issuer},
            exp={"essential": True},
            leeway=30,
        )
        try:
            registry.validate(claims)
        except JoseError:
            raise _invalid() from None
        typ = str(decoded.header.get("typ", "")).lower()
        if typ not in _ACCESS_TYPES:
            marks = [
                name
                for name, values in _NOT_ACCESS.items()
                if str(claims.get(name, "")).lower() in values
            ]
            if marks or "nonce" in claims or "at_hash" in claims or "events" in claims:
                raise _invalid("the bearer token is not an access token")
        issued = claims.get("iat")
        start = float(issued) if isinstance(issued, int | float) else time.time()
        if float(claims["exp"]) - min(start, time.time()) > self._max_lifetime:
            raise _invalid("the bearer token lives longer than this service accepts")
        return claims

    async def _introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the provider says whether an opaque token is active, and its claims."""
        endpoint = self._introspection_endpoint
        try:
            endpoint = endpoint or await self._provider.endpoint("introspection_endpoint")
        except ProviderError as exc:
            log.error("caller tokens cannot be introspected: %s", exc)
            raise ProviderUnavailableError("the identity provider is unavailable") from None
        if endpoint is None:
            raise _invalid()
        auth = self._introspection_auth or (
            self._provider.settings.client_id,
            self._provider.settings.client_secret,
        )
        try:
            response = await self._http.post(
                endpoint,
                data={"token": token, "token_type_hint": "access_token"},
                auth=auth,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            log.error("introspection failed: %s", type(exc).__name__)
            raise ProviderUnavailableError("the identity provider is unavailable") from None
        if response.status_code >= 500:
            raise ProviderUnavailableError("the identity provider is unavailable")
        try:
            claims = response.json()
        except ValueError:
            claims = None
        if response.status_code != 200 or not isinstance(claims, dict):
            log.error("introspection refused: HTTP %s", response.status_code)
            raise ProviderUnavailableError("the identity provider refused introspection")
        if claims.get("active") is not True:
            raise _invalid()
        token_type = str(claims.get("token_type", "access_token")).lower()
        if token_type not in ("access_token", "bearer"):
            raise _invalid("the bearer token is not an access token")
        iss = claims.get("iss")
        if iss is not None and iss != self._provider.settings.issuer:
            raise _invalid()
        return claims
