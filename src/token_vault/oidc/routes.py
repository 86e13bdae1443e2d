"""Login, callback, logout and back-channel logout, mountable in any Starlette/FastAPI app.

The browser session (Starlette's signed-cookie ``SessionMiddleware``, which the app must
install) holds the user id, the vault entry id and the user's own ID token (for
sign-out's ``id_token_hint``), never a refresh or access token. During a login
Authlib also keeps the ``state``, ``nonce`` and PKCE verifier there until the callback.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.starlette_client import OAuth
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route, Router

from token_vault.errors import (
    LogoutTokenError,
    ProviderError,
    ProviderUnavailableError,
    VaultError,
)
from token_vault.oidc.access import AccessTokens
from token_vault.oidc.lifetime import refresh_lifetime
from token_vault.oidc.logout_token import LogoutClaims, validate_logout_token
from token_vault.oidc.provider import OpenIDProvider
from token_vault.status import http_status
from token_vault.vault.core import Clock, TokenVault, utc_now
from token_vault.vault.entry import TokenType, metadata_stamp

__all__ = ["LoginSettings", "RelyingParty", "SessionUser", "login_routes"]

log = logging.getLogger(__name__)

OFFLINE_SCOPE = "offline_access"
_PROFILE_CLAIMS = ("email", "name")
_MAX_ID_TOKEN_HINT = 2048  # keeps the signed session cookie under browsers' 4 KB


@dataclass(frozen=True, slots=True)
class LoginSettings:
    """How the login routes behave. ``base_url`` is the app's public URL."""

    base_url: str
    prefix: str = "/auth"
    after_login: str = "/"
    after_logout: str = "/"
    provider_name: str = "oidc"
    default_refresh_ttl: timedelta = timedelta(days=30)
    end_provider_session: bool = True

    @property
    def callback_url(self) -> str:
        return f"{self.base_url.rstrip('/')}{self.prefix}/callback"


@dataclass(frozen=True, slots=True)
class SessionUser:
    """Who is signed in, as the browser session records it."""

    user_id: str
    entry_id: str


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _confirm_page(csrf: str, prefix: str) -> HTMLResponse:
    """Sign out? A button, never an action on GET."""
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sign out</title>"
        "</head><body><p>Sign out of this app?</p>"
        f"<form method='post' action='{escape(prefix)}/logout'>"
        f"<input type='hidden' name='csrf' value='{escape(csrf)}'>"
        "<button id='confirm-sign-out'>Sign out</button></form></body></html>",
        headers={"Cache-Control": "no-store"},
    )


def _is_network_error(error: BaseException) -> bool:
    """A connection or timeout failure, from httpx or the httpx2 Authlib may use."""
    if isinstance(error, OSError | TimeoutError):
        return True
    return any(
        kind.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")
        and kind.__name__ in ("TransportError", "TimeoutException")
        for kind in type(error).__mro__
    )


class RelyingParty:
    """The login half of an app: stores the refresh token at login, removes it at logout."""

    def __init__(
        self,
        vault: TokenVault,
        provider: OpenIDProvider,
        access_tokens: AccessTokens,
        settings: LoginSettings,
        *,
        clock: Clock = utc_now,
        on_store: Callable[[], None] | None = None,
    ) -> None:
        self.vault = vault
        self._on_store = on_store
        self.provider = provider
        self.access_tokens = access_tokens
        self.settings = settings
        self._clock = clock
        oauth = OAuth()
        provider_settings = provider.settings
        self._client: Any = oauth.register(
            name="vault",
            client_id=provider_settings.client_id,
            client_secret=provider_settings.client_secret,
            server_metadata_url=provider_settings.discovery_url,
            client_kwargs={
                "scope": " ".join(provider_settings.scopes),
                "code_challenge_method": "S256",
                "timeout": provider_settings.timeout,
            },
        )

    def routes(self) -> list[Route]:
        """The login routes, bound to this relying party."""
        return login_routes(lambda _: self, prefix=self.settings.prefix)

    def router(self) -> Router:
        return Router(routes=self.routes())

    @staticmethod
    def current_user(request: Request) -> SessionUser | None:
        user_id = request.session.get("user_id")
        entry_id = request.session.get("entry_id")
        if isinstance(user_id, str) and isinstance(entry_id, str):
            return SessionUser(user_id, entry_id)
        return None

    # -- routes ----------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        try:
            extra = {}
            if OFFLINE_SCOPE in self.provider.settings.scopes:
                # OpenID Connect Core 11: offline access is asked for with prompt=consent.
                extra["prompt"] = "consent"
            response: Response = await self._client.authorize_redirect(
                request, self.settings.callback_url, **extra
            )
        except Exception as exc:  # the provider or its discovery document is unreachable
            log.warning("login could not start: %s", type(exc).__name__)
            status = http_status(ProviderUnavailableError()).code
            return PlainTextResponse("the identity provider is unavailable", status_code=status)
        return response

    async def callback(self, request: Request) -> Response:
        try:
            token: dict[str, Any] = await self._client.authorize_access_token(request)
        except OAuthError as exc:  # the provider's own words stay in the log, not the page
            log.info("login refused at callback: %s", exc.error)
            return PlainTextResponse("login failed", status_code=400)
        except Exception as exc:  # the provider unreachable, or an ID token that fails
            if _is_network_error(exc):
                log.warning("login failed at callback: provider unreachable (%s)", exc)
                status = http_status(ProviderUnavailableError()).code
                return PlainTextResponse("the identity provider is unavailable", status_code=status)
            log.warning("login failed at callback: %s", type(exc).__name__)
            return PlainTextResponse("login failed", status_code=400)
        claims = await self._claims(token)
        subject = claims.get("sub")
        refresh_token = token.get("refresh_token")
        if not isinstance(subject, str) or not isinstance(refresh_token, str):
            return PlainTextResponse("login failed: no refresh token issued", status_code=400)
        try:
            entry_id = await self._store_login(subject, refresh_token, token, claims)
        except VaultError as exc:
            log.warning("login could not be stored: %s", type(exc).__name__)
            status = http_status(exc).code
            return PlainTextResponse("login could not be stored", status_code=status)
        await self._audit("login", "ok", subject, entry_id)
        request.session.clear()
        request.session["user_id"] = subject
        request.session["entry_id"] = entry_id
        request.session["csrf"] = secrets.token_urlsafe(32)
        id_token = token.get("id_token")
        if isinstance(id_token, str) and len(id_token) <= _MAX_ID_TOKEN_HINT:
            # The user's own ID token, kept for sign-out's id_token_hint (no API accepts
            # it as a credential), so the provider ends its session without asking.
            request.session["id_token"] = id_token
        return RedirectResponse(self.settings.after_login, status_code=303)

    async def _claims(self, token: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims, completed from the userinfo endpoint when the ID token
        lacks the profile (many providers put ``email`` and ``name`` only there)."""
        claims: dict[str, Any] = dict(token.get("userinfo") or {})
        if all(claims.get(name) for name in _PROFILE_CLAIMS):
            return claims
        try:
            extra = await self._client.userinfo(token=token)
        except Exception as exc:  # the profile is nice to have; the login goes on
            log.info("userinfo not available: %s", type(exc).__name__)
            return claims
        if not isinstance(extra, dict) or extra.get("sub") != claims.get("sub"):
            return claims  # OpenID Connect Core 5.3.4: a different sub is not this user
        return {**extra, **{k: v for k, v in claims.items() if v is not None}}

    async def _store_login(
        self, subject: str, refresh_token: str, token: dict[str, Any], claims: dict[str, Any]
    ) -> str:
        now = self._clock()
        lifetime = refresh_lifetime(token.get("refresh_expires_in"), refresh_token, now)
        # An unknown lifetime is shown as unknown; the default only bounds purging.
        expires_at = lifetime.expires_at or now + self.settings.default_refresh_ttl
        session_id = claims.get("sid") or token.get("session_state")
        metadata = {
            "email": claims.get("email"),
            "name": claims.get("name"),
            "username": claims.get("preferred_username"),
            "provider": self.settings.provider_name,
            "loginTime": metadata_stamp(now),
            "refreshExpiry": lifetime.source.value,
        }
        if OFFLINE_SCOPE in str(token.get("scope", "")).split():
            # Offline access: one entry per user and client, replaced by each login; the
            # token it replaces is revoked so grants do not pile up at the provider.
            entry_id, replaced = await self.vault.replace_offline_token(
                subject,
                self.provider.settings.client_id,
                refresh_token,
                expires_at,
                session_id,
                metadata,
            )
            if replaced is not None:
                await self._revoke(replaced)
            return entry_id
        access_token = token.get("access_token")
        expires_in = token.get("expires_in")
        access_expires_at = None
        if isinstance(access_token, str) and isinstance(expires_in, int) and expires_in > 0:
            access_expires_at = now + timedelta(seconds=expires_in)
        else:
            access_token = None
        entry_id = await self.vault.upsert_refresh_token(
            subject,
            refresh_token,
            expires_at,
            session_id,
            metadata,
            access_token=access_token,
            access_expires_at=access_expires_at,
        )
        if self._on_store is not None:
            self._on_store()
        return entry_id

    async def _audit(
        self, action: str, outcome: str, user_id: str | None, entry_id: str | None = None
    ) -> None:
        """Record a sign-in, sign-out, logout or revocation; a trail that cannot be written
        is logged, never a reason to keep someone signed in."""
        try:
            await self.vault.record_audit(action, outcome, user_id=user_id, entry_id=entry_id)
        except VaultError as exc:
            log.error("%s not audited: %s", action, type(exc).__name__)

    async def _revoke(self, token: str) -> None:
        """Revoke at the provider, best effort: a provider that is down stops nothing."""
        try:
            await self.provider.revoke(token)
        except ProviderError as exc:
            log.warning("provider revocation failed: %s", type(exc).__name__)

    @staticmethod
    def csrf_token(request: Request) -> str:
        """The session's anti-forgery token, for the app's own forms (``csrf`` field)."""
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return token

    async def is_same_origin_post(self, request: Request) -> bool:
        """A POST from this app's own pages: the ``csrf`` form field matches the session,
        and the ``Origin`` header, when the browser sends one, is this app's."""
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") != _origin(self.settings.base_url):
            return False
        expected = request.session.get("csrf")
        form = await request.form()
        given = form.get("csrf")
        return (
            isinstance(expected, str)
            and isinstance(given, str)
            and hmac.compare_digest(expected, given)
        )

    async def logout(self, request: Request) -> Response:
        """Sign out (POST, from this app's page): the browser session and its refresh
        entry end; offline entries, made to outlive sign-out, stay (``/offline/revoke``
        ends them). A GET changes nothing: it offers the button, so no other site can
        sign a user out with a link."""
        if request.method != "POST":
            return _confirm_page(self.csrf_token(request), self.settings.prefix)
        if not await self.is_same_origin_post(request):
            return PlainTextResponse("sign-out refused: not from this site", status_code=403)
        user = self.current_user(request)
        id_token = request.session.get("id_token")
        request.session.clear()
        if user is not None:
            entry = None
            try:
                entry = await self.vault.retrieve(user.entry_id)
            except VaultError as exc:
                log.warning("logout could not read the entry: %s", type(exc).__name__)
            if entry is not None and entry.token_type is TokenType.REFRESH:
                await self._revoke(entry.token)
                await self.vault.delete(entry.id)
            await self._audit("logout", "ok", user.user_id, user.entry_id)
        target = self.settings.after_logout
        if self.settings.end_provider_session:
            try:
                end_session = await self.provider.endpoint("end_session_endpoint")
            except ProviderError:
                end_session = None
            if end_session:
                after = f"{self.settings.base_url.rstrip('/')}{self.settings.after_logout}"
                query = {
                    "client_id": self.provider.settings.client_id,
                    "post_logout_redirect_uri": after,
                }
                if isinstance(id_token, str):
                    query["id_token_hint"] = id_token
                target = f"{end_session}?{urlencode(query)}"
        return RedirectResponse(target, status_code=303)

    async def revoke_offline(self, request: Request) -> Response:
        """ "Revoke offline access": the signed-in user's offline entries from this client
        are revoked at the provider and deleted; the browser session stays."""
        if not await self.is_same_origin_post(request):
            return PlainTextResponse("revocation refused: not from this site", status_code=403)
        user = self.current_user(request)
        if user is None:
            return RedirectResponse(self.settings.after_logout, status_code=303)
        client_id = self.provider.settings.client_id
        try:
            entries = await self.vault.list_tokens(user.user_id, TokenType.OFFLINE)
            for entry in entries:
                if entry.client_id == client_id:
                    await self._revoke(entry.token)
                    await self.vault.delete(entry.id)
                    await self._audit("revoke_offline", "ok", user.user_id, entry.id)
        except VaultError as exc:
            log.warning("offline access could not be revoked: %s", type(exc).__name__)
            status = http_status(exc).code
            return PlainTextResponse("offline access could not be revoked", status_code=status)
        if any(entry.id == user.entry_id for entry in entries):
            request.session.clear()  # the session's own entry is gone
        return RedirectResponse(self.settings.after_login, status_code=303)

    async def backchannel_logout(self, request: Request) -> Response:
        """OpenID Back-Channel Logout 1.0: 200 when done, 400 (nothing changed) otherwise."""
        headers = {"Cache-Control": "no-store"}
        try:
            form = await request.form()
            logout_token = form.get("logout_token")
            if not isinstance(logout_token, str):
                raise LogoutTokenError("malformed", "logout_token is missing")
            claims = await self._validate(logout_token)
            if not await self.vault.remember_logout_token(claims.jti, claims.expires_at):
                raise LogoutTokenError("replayed", "this logout token was used before")
        except LogoutTokenError as exc:
            log.info("back-channel logout refused: %s", exc.reason)
            body = {"error": "invalid_request", "error_description": str(exc)}
            return JSONResponse(body, status_code=http_status(exc).code, headers=headers)
        except VaultError as exc:  # the provider or the database did not answer
            log.warning("back-channel logout failed: %s", type(exc).__name__)
            body = {"error": "temporarily_unavailable"}
            return JSONResponse(body, status_code=http_status(exc).code, headers=headers)
        # Each deletion also tells the app (an entry.logged_out event per entry) when the
        # vault writes events.
        if claims.session_id is not None:
            await self.vault.backchannel_logout(
                session_state=claims.session_id, token_type=TokenType.REFRESH
            )
        elif claims.subject is not None:
            await self.vault.backchannel_logout(
                user_id=claims.subject, token_type=TokenType.REFRESH
            )
        await self._audit("backchannel_logout", "ok", claims.subject)
        if claims.revoke_offline_access:
            if claims.subject is not None:
                await self.vault.backchannel_logout(
                    user_id=claims.subject, token_type=TokenType.OFFLINE
                )
            elif claims.session_id is not None:
                await self.vault.backchannel_logout(
                    session_state=claims.session_id, token_type=TokenType.OFFLINE
                )
        return Response(status_code=200, headers=headers)

    async def _validate(self, logout_token: str) -> LogoutClaims:
        settings = self.provider.settings
        for refetch in (False, True):
            keys = await self.provider.key_set(refetch=refetch)
            try:
                return validate_logout_token(
                    logout_token,
                    keys=keys,
                    issuer=settings.issuer,
                    audience=settings.client_id,
                    now=self._clock(),
                )
            except LogoutTokenError as exc:
                if exc.reason != "bad_signature" or refetch:
                    raise
        raise AssertionError("unreachable")


_ROUTES = (  # (path, handler name, methods)
    ("/login", "login", ["GET"]),
    ("/callback", "callback", ["GET"]),
    ("/logout", "logout", ["GET", "POST"]),
    ("/offline/revoke", "revoke_offline", ["POST"]),
    ("/backchannel-logout", "backchannel_logout", ["POST"]),
)


def login_routes(
    relying_party: Callable[[Request], RelyingParty], *, prefix: str = "/auth"
) -> list[Route]:
    """The login routes, calling the relying party ``relying_party(request)`` returns.

    For apps that build their relying party at start-up (in a lifespan), after the
    routes are declared.
    """

    def endpoint(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            response: Response = await getattr(relying_party(request), name)(request)
            return response

        return handle

    return [
        Route(f"{prefix}{path}", endpoint(name), methods=methods, name=name)
        for path, name, methods in _ROUTES
    ]
