"""Events to the app: what they are, and the body each one is delivered with.

The vault writes an event into its outbox (``auth_vault_event``) in the same statement
or transaction as the change it describes, so an event is never lost and never told of a
change that did not happen. A delivery worker
(:class:`token_vault.service.webhooks.Deliverer`) sends each one to the app's webhook,
signed per Standard Webhooks, until the app acknowledges it. An event names the user and
the entry; it never holds a token.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from token_vault.storage.outbox import DeliveryOutcome, DeliveryRow, EventRow
from token_vault.storage.record import metadata_stamp

__all__ = [
    "DeliveryOutcome",
    "DeliveryRow",
    "EventRow",
    "EventState",
    "EventType",
    "event_body",
]


class EventType(StrEnum):
    NEEDS_REAUTH = "entry.needs_reauth"  # the provider refused the grant (invalid_grant)
    LOGGED_OUT = "entry.logged_out"  # removed by the provider's back-channel logout
    EXPIRED = "entry.expired"  # removed by purge-expired, its token having lapsed


class EventState(StrEnum):
    PENDING = "pending"  # to be delivered (now, or after a back-off)
    DELIVERED = "delivered"  # the app answered 2xx
    FAILED = "failed"  # out of attempts; `token-vault events replay ID` queues it again


def event_body(event: EventRow) -> dict[str, Any]:
    """The JSON body the app receives: the same for every attempt at one event.

    Standard Webhooks' shape: ``type``, ``timestamp`` (when it happened) and ``data``.
    """
    return {
        "type": event.type,
        "timestamp": metadata_stamp(event.occurred_at),
        "data": {
            "id": event.id,
            "user_id": event.user_id,
            "entry_id": event.entry_id,
            "token_type": event.token_type,
        },
    }
