"""The API for other backend services. No response ever carries a refresh or offline token.

Each operation needs its scope in the caller's token *and* the caller policy's consent
for that action on that user; each is written to the audit trail. A token handout whose
audit record cannot be written fails (503): nothing leaves the vault unrecorded. Bodies
are read only once the caller is authenticated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from token_vault.errors import NotFoundError, ValidationError
from token_vault.service.caller import Caller
from token_vault.service.policy import CONSENT_KEY, UserScope
from token_vault.service.problem import AuthError
from token_vault.service.settings import SCOPES
from token_vault.service.state import Services, ServicesDep, get_services
from token_vault.vault.audit import audit_context

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["vault"])


def _require(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Caller:
        caller = await get_services(request).callers.verify(authorization, scope)
        audit_context.set(replace(audit_context.get(), caller=caller.client_id))
        return caller

    return dependency


Reader = Annotated[Caller, Depends(_require(SCOPES["read"]))]
TokenTaker = Annotated[Caller, Depends(_require(SCOPES["token"]))]
Writer = Annotated[Caller, Depends(_require(SCOPES["write"]))]
Deleter = Annotated[Caller, Depends(_require(SCOPES["delete"]))]
Auditor = Annotated[Caller, Depends(_require(SCOPES["audit"]))]

# Metadata keys the vault itself keeps: no caller may set them.
RESERVED_METADATA = frozenset(
    {"refreshCount", "lastRefresh", "updatedAt", "loginTime", "provider", "refreshExpiry",
     CONSENT_KEY}
)  # fmt: skip
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _allow(services: Services, caller: Caller, action: str, user_id: str | None) -> None:
    """The policy's word for ``caller`` doing ``action`` for ``user_id``; refusals are
    audited and answered 403."""
    policy = services.policy
    consents: frozenset[str] = frozenset()
    rule = policy.rule(caller.client_id)
    if user_id is not None and rule is not None and rule.users is UserScope.CONSENTED:
        consents = await _consents(services, user_id)
    decision = policy.decide(caller.client_id, action, user_id, consents)
    if not decision.allowed:
        await services.vault.record_audit(action, f"refused:{decision.reason}", user_id=user_id)
        raise AuthError(403, f"the caller policy refuses this ({decision.reason})", "")


async def _consents(services: Services, user_id: str) -> frozenset[str]:
    found: set[str] = set()
    for entry in await services.vault.list_tokens(user_id):
        listed = entry.metadata.get(CONSENT_KEY)
        if isinstance(listed, list):
            found.update(item for item in listed if isinstance(item, str))
    return frozenset(found)


class AccessTokenOut(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type, not a secret
    expires_at: datetime
    refreshed: bool


class EntryOut(BaseModel):
    """An entry's description: everything but the token (read from a ``VaultEntry``)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    token_type: str
    key_id: str
    expires_at: datetime
    session_state: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    needs_reauth: bool
    client_id: str | None = None


class EntriesOut(BaseModel):
    user_id: str
    entries: list[EntryOut]


class RefreshTokenIn(BaseModel):
    """A refresh token an app obtained at its own login, for the vault to keep."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    refresh_token: str = Field(repr=False)
    expires_at: datetime
    session_state: str | None = None
    metadata: dict[str, Any] | None = None


class StoredOut(BaseModel):
    id: str


class DeletedOut(BaseModel):
    deleted: int


@router.post("/users/{user_id:path}/access-token", response_model=AccessTokenOut)
async def get_access_token(
    user_id: str,
    caller: TokenTaker,
    services: ServicesDep,
    response: Response,
    entry_id: Annotated[str | None, Query(description="take it from this entry")] = None,
) -> AccessTokenOut:
    """A valid access token for the user, refreshed at the provider when needed: from
    ``entry_id`` if given, else the refresh entry, else the newest live offline entry."""
    await _allow(services, caller, "token", user_id)
    token = await services.access_tokens.get_access_token(user_id, entry_id=entry_id)
    # Strict: a handout that cannot be audited does not happen.
    await services.vault.record_audit(
        "token", "refreshed" if token.refreshed else "cached", user_id=user_id,
        entry_id=token.entry_id,
    )  # fmt: skip
    response.headers.update(NO_STORE)  # a token: no cache may keep it
    return AccessTokenOut(
        access_token=token.token, expires_at=token.expires_at, refreshed=token.refreshed
    )


@router.get("/users/{user_id:path}/tokens", response_model=EntriesOut)
async def list_tokens(user_id: str, caller: Reader, services: ServicesDep) -> EntriesOut:
    """The user's entries, without their tokens."""
    await _allow(services, caller, "read", user_id)
    entries = await services.vault.list_tokens(user_id)
    return EntriesOut(user_id=user_id, entries=[EntryOut.model_validate(e) for e in entries])


@router.put(
    "/users/{user_id:path}/refresh-token",
    response_model=StoredOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RefreshTokenIn.model_json_schema()}},
        }
    },
)
async def put_refresh_token(
    user_id: str, request: Request, caller: Writer, services: ServicesDep
) -> StoredOut:
    """Store the user's refresh token (insert or replace, keeping the entry id). The body
    (:class:`RefreshTokenIn`) is read only after the caller is authenticated."""
    await _allow(services, caller, "write", user_id)
    try:
        body = RefreshTokenIn.model_validate_json(await request.body())
    except PydanticValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise ValidationError(", ".join(fields), "invalid request body") from None
    reserved = sorted(RESERVED_METADATA & set(body.metadata or {}))
    if reserved:
        raise ValidationError("metadata", f"keys kept by the vault itself: {reserved}")
    entry_id = await services.vault.upsert_refresh_token(
        user_id, body.refresh_token, body.expires_at, body.session_state, body.metadata
    )
    services.metrics.upserts.inc()
    await services.vault.record_audit("write", "ok", user_id=user_id, entry_id=entry_id)
    return StoredOut(id=entry_id)


@router.delete("/users/{user_id:path}/tokens", response_model=DeletedOut)
async def delete_user_tokens(user_id: str, caller: Deleter, services: ServicesDep) -> DeletedOut:
    """Delete every entry of the user."""
    await _allow(services, caller, "delete", user_id)
    deleted = await services.vault.delete_user(user_id)
    await services.vault.record_audit("delete", f"ok:{deleted}", user_id=user_id)
    return DeletedOut(deleted=deleted)


@router.delete("/tokens/{entry_id}", status_code=204)
async def delete_token(entry_id: str, caller: Deleter, services: ServicesDep) -> Response:
    """Delete one entry."""
    entry = await services.vault.retrieve(entry_id)
    if entry is None:
        await _allow(services, caller, "delete", None)
        raise NotFoundError(f"no entry {entry_id!r}")
    await _allow(services, caller, "delete", entry.user_id)
    await services.vault.delete(entry_id)
    await services.vault.record_audit("delete", "ok", user_id=entry.user_id, entry_id=entry_id)
    return Response(status_code=204)


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    action: str
    outcome: str
    caller: str | None
    user_id: str | None
    entry_id: str | None
    request_id: str | None
    client_address: str | None


class AuditOut(BaseModel):
    records: list[AuditRecordOut]


@router.get("/audit", response_model=AuditOut)
async def audit_trail(
    caller: Auditor,
    services: ServicesDep,
    user: Annotated[str | None, Query(description="only this user's records")] = None,
    by: Annotated[str | None, Query(alias="caller", description="only this caller's")] = None,
    since: Annotated[datetime | None, Query(description="only records from then on")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditOut:
    """The audit trail, newest first (scope ``vault:audit`` and the policy's ``audit``)."""
    await _allow(services, caller, "audit", None)
    records = await services.vault.audit_trail(user_id=user, caller=by, since=since, limit=limit)
    return AuditOut(records=[AuditRecordOut.model_validate(r) for r in records])
