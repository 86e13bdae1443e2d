"""What a running service holds, built at start-up and reached through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from token_vault.oidc.access import AccessTokens
from token_vault.oidc.provider import OpenIDProvider
from token_vault.oidc.routes import RelyingParty
from token_vault.service.caller import CallerVerifier
from token_vault.service.metrics import Metrics
from token_vault.service.policy import CallerPolicy
from token_vault.service.settings import ServiceSettings
from token_vault.vault.core import TokenVault

__all__ = ["Services", "ServicesDep", "get_services"]


@dataclass(frozen=True, slots=True)
class Services:
    settings: ServiceSettings
    vault: TokenVault
    provider: OpenIDProvider
    access_tokens: AccessTokens
    relying_party: RelyingParty
    callers: CallerVerifier
    policy: CallerPolicy
    metrics: Metrics


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
