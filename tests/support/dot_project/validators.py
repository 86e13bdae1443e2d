"""The OIDC claims the django-oauth-toolkit test provider issues.

DOT's ``OAuth2Validator`` issues only ``sub`` (the user's primary key) unless
``get_additional_claims`` adds more. These are filtered by scope (``profile`` gives
the names, ``email`` the address) and go into both the ID token and userinfo. The
request-independent form (no ``request`` argument) also lists them in discovery's
``claims_supported``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator  # type: ignore[import-untyped]


def _user(request: Any) -> Any:
    return request.user


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]
    """``OAuth2Validator`` plus the standard profile and email claims."""

    def get_additional_claims(self) -> dict[str, Callable[[Any], object]]:
        return {
            "name": lambda r: _user(r).get_full_name(),
            "given_name": lambda r: _user(r).first_name,
            "family_name": lambda r: _user(r).last_name,
            "preferred_username": lambda r: _user(r).get_username(),
            "email": lambda r: _user(r).email,
            "email_verified": lambda r: True,
        }
