"""The audit trail's shapes: a record, and the request context records are stamped with.

The service sets :data:`audit_context` for each request (caller, request id, client
address); every record the vault writes while serving it carries them, including
records written by a refresh that request started. Records never hold a token.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from token_vault.storage.record import AuditQuery, AuditRecord

__all__ = ["AuditContext", "AuditQuery", "AuditRecord", "audit_context"]


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who is asking, as the service knows it."""

    caller: str | None = None
    request_id: str | None = None
    client_address: str | None = None


audit_context: ContextVar[AuditContext] = ContextVar(
    "token_vault_audit_context",
    default=AuditContext(),  # noqa: B039 - frozen, shared
)
