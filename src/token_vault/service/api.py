"""The API for other backend services. No response ever carries a refresh or offline token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from token_vault.errors import NotFoundError
from token_vault.service.caller import Caller
from token_vault.service.settings import SCOPES
from token_vault.service.state import ServicesDep, get_services

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["vault"])


def _require(scope: str) -> Callable[..., Awaitable[Caller]]:
    async def dependency(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Caller:
        return await get_services(request).callers.verify(authorization, scope)

    return dependency


Reader = Annotated[Caller, Depends(_require(SCOPES["read"]))]
TokenTaker = Annotated[Caller, Depends(_require(SCOPES["token"]))]
Writer = Annotated[Caller, Depends(_require(SCOPES["write"]))]
Deleter = Annotated[Caller, Depends(_require(SCOPES["delete"]))]


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
    entry_id: Annotated[str | None, Query(description="take it from this entry")] = None,
) -> AccessTokenOut:
    """A valid access token for the user, refreshed at the provider when needed: from
    ``entry_id`` if given, else the refresh entry, else the newest live offline entry."""
    token = await services.access_tokens.get_access_token(user_id, entry_id=entry_id)
    return AccessTokenOut(
        access_token=token.token, expires_at=token.expires_at, refreshed=token.refreshed
    )


@router.get("/users/{user_id:path}/tokens", response_model=EntriesOut)
async def list_tokens(user_id: str, caller: Reader, services: ServicesDep) -> EntriesOut:
    """The user's entries, without their tokens."""
    entries = await services.vault.list_tokens(user_id)
    return EntriesOut(user_id=user_id, entries=[EntryOut.model_validate(e) for e in entries])


@router.put("/users/{user_id:path}/refresh-token", response_model=StoredOut)
async def put_refresh_token(
    user_id: str, body: RefreshTokenIn, caller: Writer, services: ServicesDep
) -> StoredOut:
    """Store the user's refresh token (insert or replace, keeping the entry id)."""
    entry_id = await services.vault.upsert_refresh_token(
        user_id, body.refresh_token, body.expires_at, body.session_state, body.metadata
    )
    services.metrics.upserts.inc()
    return StoredOut(id=entry_id)


@router.delete("/users/{user_id:path}/tokens", response_model=DeletedOut)
async def delete_user_tokens(user_id: str, caller: Deleter, services: ServicesDep) -> DeletedOut:
    """Delete every entry of the user."""
    return DeletedOut(deleted=await services.vault.delete_user(user_id))


@router.delete("/tokens/{entry_id}", status_code=204)
async def delete_token(entry_id: str, caller: Deleter, services: ServicesDep) -> Response:
    """Delete one entry."""
    if not await services.vault.delete(entry_id):
        raise NotFoundError(f"no entry {entry_id!r}")
    return Response(status_code=204)
