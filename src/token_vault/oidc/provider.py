"""Talking to the OpenID provider: discovery, keys, refresh, revocation, ID tokens.

Refresh and revocation are plain form posts on one httpx client (client_secret_basic);
JWTs are checked with joserfc. The HTTP transport is a parameter, so tests and embedders
can route or wrap it. (The browser login flow is Authlib's, in :mod:`.routes`.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from token_vault.errors import (
    ProviderError,
    ProviderResponseError,
    ProviderUnavailableError,
    ReauthRequiredError,
)

__all__ = ["ID_TOKEN_ALGORITHMS", "OpenIDProvider", "ProviderSettings", "TokenSet"]

ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
_KEYS_MIN_REFETCH_SECONDS = 30.0

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """Where the provider is and how this client authenticates to it."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    timeout: float = 10.0
    attempts: int = 3
    backoff: float = 0.2
    # Endpoints to use when the discovery document does not name them.
    revocation_endpoint: str | None = None
    end_session_endpoint: str | None = None
    # Origins besides the issuer's that discovery may send this client to (Google's
    # token endpoint and keys live on googleapis.com); https required unless allowed.
    trusted_origins: tuple[str, ...] = ()
    allow_http: bool = True

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _optional_int(response: Mapping[str, Any], name: str) -> int | None:
    value = response.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProviderResponseError(f"token response field {name!r} is not a number")
    return int(value)


def _optional_str(response: Mapping[str, Any], name: str) -> str | None:
    value = response.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProviderResponseError(f"token response field {name!r} is not a string")
    return value


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A token endpoint response. Tokens are kept out of ``repr``."""

    access_token: str = field(repr=False)
    expires_in: int | None
    refresh_token: str | None = field(repr=False)
    refresh_expires_in: int | None
    id_token: str | None = field(repr=False)
    session_state: str | None
    scope: str | None

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> TokenSet:
        access = _optional_str(response, "access_token")
        if access is None:
            raise ProviderResponseError("token response carries no access_token")
        token_type = response.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ProviderResponseError("token response is not a Bearer token")
        return cls(
            access_token=access,
            expires_in=_optional_int(response, "expires_in"),
            refresh_token=_optional_str(response, "refresh_token"),
            refresh_expires_in=_optional_int(response, "refresh_expires_in"),
            id_token=_optional_str(response, "id_token"),
            session_state=_optional_str(response, "session_state"),
            scope=_optional_str(response, "scope"),
        )

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset((self.scope or "").split())


def _oauth_error(response: httpx.Response) -> str | None:
    """The ``error`` code of an OAuth error answer (RFC 6749, 5.2), if it is one."""
    if response.status_code not in (400, 401):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else "unknown_error"


_ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "userinfo_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "end_session_endpoint",
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _check_endpoints(document: Mapping[str, Any], settings: ProviderSettings) -> None:
    """Every endpoint discovery names must live at the issuer's origin (or one trusted
    by configuration): otherwise a tampered document could send the client secret, or
    fetch keys, anywhere."""
    allowed = {_origin(settings.issuer), *(o.rstrip("/").lower() for o in settings.trusted_origins)}
    for name in _ENDPOINTS:
        value = document.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or _origin(value) not in allowed:
            raise ProviderResponseError(
                f"discovery names a {name} outside the issuer's origin ({value!r}); "
                "add its origin to TOKEN_VAULT_OIDC_TRUSTED_ORIGINS if that is intended"
            )
        if not settings.allow_http and not value.startswith("https://"):
            raise ProviderResponseError(f"discovery names a plain-http {name} ({value!r})")


class OpenIDProvider:
    """One OpenID provider and this app's confidential client at it."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        instrument: Callable[[httpx.AsyncClient], None] | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._http = httpx.AsyncClient(timeout=settings.timeout, transport=transport)
        if instrument is not None:  # e.g. tracing: spans for the calls to the provider
            instrument(self._http)
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_refetched_at = -_KEYS_MIN_REFETCH_SECONDS
        self._keys_lock = asyncio.Lock()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        settings = self.settings
        return f"OpenIDProvider(issuer={settings.issuer!r}, client_id={settings.client_id!r})"

    async def close(self) -> None:
        await self._http.aclose()

    # -- discovery and keys ----------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched once (with retries) and checked."""
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    document = await self._get_json(self.settings.discovery_url)
                    named = document.get("issuer")
                    if named != self.settings.issuer:
                        raise ProviderResponseError(
                            f"the provider's discovery document names the issuer {named!r}, "
                            f"but {self.settings.issuer!r} is configured (they must match "
                            "exactly, trailing slash included)"
                        )
                    _check_endpoints(document, self.settings)
                    self._metadata = document
        return self._metadata

    async def endpoint(self, name: str) -> str | None:
        """An endpoint from discovery, else from the settings (revocation, end session)."""
        value = (await self.metadata()).get(name)
        if isinstance(value, str):
            return value
        configured = {
            "revocation_endpoint": self.settings.revocation_endpoint,
            "end_session_endpoint": self.settings.end_session_endpoint,
        }
        return configured.get(name)

    async def key_set(self, *, refetch: bool = False) -> KeySet:
        """The provider's signing keys. ``refetch`` reloads them, once at a time and at
        most every 30 s (failed attempts count too), so junk tokens cannot make the
        service hammer the provider."""
        if self._keys is not None and not refetch:
            return self._keys
        async with self._keys_lock:
            since = time.monotonic() - self._keys_refetched_at
            if self._keys is not None and (not refetch or since < _KEYS_MIN_REFETCH_SECONDS):
                return self._keys
            if self._keys is not None:  # a refetch: counted before it runs, failed or not
                self._keys_refetched_at = time.monotonic()
            jwks_uri = await self.endpoint("jwks_uri")
            if jwks_uri is None:
                raise ProviderResponseError("discovery document has no jwks_uri")
            document = await self._get_json(jwks_uri)
            try:
                self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError):
                raise ProviderResponseError("provider's JWKS could not be read") from None
            return self._keys

    async def decode_jwt(
        self, token: str, algorithms: tuple[str, ...] = ID_TOKEN_ALGORITHMS
    ) -> jwt.Token:
        """Verify a JWT's signature with the provider's keys.

        The keys are reloaded only for a well-formed JWT whose ``kid`` is not among the
        keys held (the provider rotated its keys); any other failure is the token's.
        """
        try:
            header = extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise ProviderResponseError("not a well-formed JWT") from None
        kid = header.get("kid")
        keys = await self.key_set()
        if isinstance(kid, str) and not any(k.kid == kid for k in keys.keys):
            keys = await self.key_set(refetch=True)
        try:
            return jwt.decode(token, keys, algorithms=list(algorithms))
        except (JoseError, ValueError, TypeError):
            raise ProviderResponseError("JWT signature could not be verified") from None

    async def validate_id_token(
        self, id_token: str, *, subject: str | None = None
    ) -> dict[str, Any]:
        """Signature, ``iss``, ``aud``, ``exp``, ``iat``, ``sub``: the claims, or an error."""
        token = await self.decode_jwt(id_token)
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.settings.issuer},
            sub={"essential": True, **({"value": subject} if subject else {})},
            exp={"essential": True},
            iat={"essential": True},
            leeway=60,
        )
        try:
            registry.validate(token.claims)
        except JoseError as exc:
            raise ProviderResponseError(f"ID token rejected: {exc.error}") from None
        audience = token.claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.client_id not in audiences:
            raise ProviderResponseError("ID token rejected: not issued to this client")
        return dict(token.claims)

    # -- token endpoint --------------------------------------------------------------

    async def refresh(self, refresh_token: str, *, user_id: str) -> TokenSet:
        """Use a refresh token once.

        Retried only when the request provably never reached the provider (the
        connection could not be made): after a timeout or a 5xx the provider may have
        rotated the token already, and replaying the old one would look like token theft
        (Keycloak then revokes the whole grant). Those raise
        :class:`ProviderUnavailableError` at once; ``invalid_grant`` raises
        :class:`ReauthRequiredError`.
        """
        token_endpoint = await self.endpoint("token_endpoint")
        if token_endpoint is None:
            raise ProviderResponseError("discovery document has no token_endpoint")

        async def attempt() -> Mapping[str, Any]:
            response = await self._http.post(
                token_endpoint,
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                auth=self._client_auth(),
                headers={"Accept": "application/json"},
            )
            error = _oauth_error(response)
            if error == "invalid_grant":
                raise ReauthRequiredError(user_id, "invalid_grant")
            if error is not None:
                raise ProviderResponseError(f"provider refused the refresh: {error}")
            response.raise_for_status()
            document: object = response.json()
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            return document

        response = await self._with_retries(attempt, "token endpoint", only_unsent=True)
        return TokenSet.from_response(response)

    async def check_client_credentials(self) -> bool:
        """Whether the token endpoint accepts this client's id and secret.

        Sends a refresh grant with a token that cannot exist: an authenticated client
        gets ``invalid_grant`` (or another grant error), a wrong secret ``invalid_client``.
        """
        token_endpoint = await self.endpoint("token_endpoint")
        if token_endpoint is None:
            raise ProviderResponseError("discovery document has no token_endpoint")
        try:
            response = await self._http.post(
                token_endpoint,
                data={"grant_type": "refresh_token", "refresh_token": "token-vault-doctor"},
                auth=self._client_auth(),
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(f"token endpoint: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise ProviderUnavailableError(f"token endpoint answered HTTP {response.status_code}")
        return _oauth_error(response) not in ("invalid_client", "unauthorized_client")

    async def revoke(self, token: str, *, hint: str = "refresh_token") -> bool:
        """RFC 7009 revocation; ``False`` if the provider has no endpoint or is down."""
        endpoint = await self.endpoint("revocation_endpoint")
        if endpoint is None:
            return False
        try:
            response = await self._http.post(
                endpoint,
                data={"token": token, "token_type_hint": hint},
                auth=self._client_auth(),
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # -- plumbing --------------------------------------------------------------------

    def _client_auth(self) -> httpx.BasicAuth:
        """``client_secret_basic``: id and secret form-encoded first (RFC 6749, 2.3.1)."""
        return httpx.BasicAuth(
            quote(self.settings.client_id, safe=""), quote(self.settings.client_secret, safe="")
        )

    async def _get_json(self, url: str) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document: object = response.json()
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            return document

        return await self._with_retries(attempt, url)

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[T]], what: str, *, only_unsent: bool = False
    ) -> T:
        """Call ``attempt`` up to ``settings.attempts`` times with backoff.

        ``only_unsent``: retry only failures that prove the request was never sent
        (connection refused, connect timeout); anything else fails at once.
        """
        attempts = max(1, self.settings.attempts)
        for number in range(attempts):
            try:
                return await attempt()
            except ProviderError:
                raise
            except ReauthRequiredError:
                raise
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status < 500 and status != 429:
                    raise ProviderResponseError(f"{what} answered HTTP {status}") from None
                if only_unsent:
                    raise ProviderUnavailableError(f"{what} answered HTTP {status}") from None
            except (httpx.ConnectError, httpx.ConnectTimeout):
                pass
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if only_unsent:
                    raise ProviderUnavailableError(
                        f"{what} did not answer ({type(exc).__name__}); not retried"
                    ) from None
            except ValueError:
                raise ProviderResponseError(f"{what} answered something that is not JSON") from None
            if number + 1 < attempts:
                await self._sleep(self.settings.backoff * 2**number)
        raise ProviderUnavailableError(f"{what} unavailable after {attempts} attempts")
