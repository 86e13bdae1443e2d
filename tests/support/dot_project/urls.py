"""URLs of the django-oauth-toolkit test provider: DOT under ``/o/``, a login page."""

from __future__ import annotations

from django.contrib.auth.views import LoginView  # type: ignore[import-untyped]
from django.urls import include, path  # type: ignore[import-untyped]

urlpatterns = [
    # Authorize, token, revoke, introspect, userinfo, JWKS, RP-initiated logout and
    # both discovery documents (.well-known/openid-configuration and RFC 8414's
    # .well-known/oauth-authorization-server), all under the issuer <origin>/o.
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", LoginView.as_view(template_name="login.html"), name="login"),
]
