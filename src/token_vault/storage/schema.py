"""The vault's tables as one SQLAlchemy model: the single list of columns.

Both backends read their column list from here, and a test compares this model with
the schema the migrations build (Alembic's autogenerate comparison) on PostgreSQL and
SQLite, so the model, the migrations and the statements cannot drift apart. Adding a
column means: this model, a migration, and the statements that use it.

Types: ``jsonb`` and ``timestamptz`` on PostgreSQL; JSON text and fixed-width ISO 8601
UTC text (which sorts as time does) on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

__all__ = [
    "COLUMNS",
    "EVENT_COLUMNS",
    "OFFLINE_INDEX",
    "REFRESH_INDEX",
    "audit",
    "auth_vault",
    "column_position",
    "event",
    "event_delivery",
    "metadata",
    "seen_logout_token",
]

NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.Text().with_variant(sa.DateTime(timezone=True), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

REFRESH_INDEX = "auth_vault_user_id_token_type_unique_idx"
OFFLINE_INDEX = "auth_vault_user_id_client_id_offline_idx"
OFFLINE_PREDICATE = "token_type = 'offline' AND client_id IS NOT NULL"

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

auth_vault = sa.Table(
    "auth_vault",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("user_id", sa.Text(), nullable=False),
    sa.Column("token_type", sa.Text(), nullable=False),
    sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    sa.Column("nonce", sa.LargeBinary(), nullable=False),
    sa.Column("key_id", sa.Text(), nullable=False),
    sa.Column("expires_at", TIME, nullable=False),
    sa.Column("session_state", sa.Text(), nullable=True),
    sa.Column("metadata", JSON, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    # The cached access token, sealed like the refresh token (revision 0003).
    sa.Column("access_ciphertext", sa.LargeBinary(), nullable=True),
    sa.Column("access_nonce", sa.LargeBinary(), nullable=True),
    sa.Column("access_key_id", sa.Text(), nullable=True),
    sa.Column("access_expires_at", TIME, nullable=True),
    # The refresh lease: who refreshes this entry at the provider right now, until when.
    sa.Column("lease_owner", sa.Text(), nullable=True),
    sa.Column("lease_expires_at", TIME, nullable=True),
    sa.Column("needs_reauth", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The client an offline token was issued to, for offline access by login (0004).
    sa.Column("client_id", sa.Text(), nullable=True),
    # The ciphertext format: 2 binds the entry id as well (revision 0006).
    sa.Column("seal_version", sa.SmallInteger(), nullable=False, server_default="1"),
    sa.CheckConstraint("token_type IN ('refresh', 'offline')", name="token_type"),
    sa.Index("auth_vault_user_id_idx", "user_id", "token_type"),
    sa.Index("auth_vault_session_state_idx", "session_state"),
    # Exactly one refresh token per user; the upsert's conflict target restates the
    # predicate as a literal, which is how PostgreSQL finds this index.
    sa.Index(
        REFRESH_INDEX,
        "user_id",
        "token_type",
        unique=True,
        postgresql_where=sa.text("token_type = 'refresh'"),
        sqlite_where=sa.text("token_type = 'refresh'"),
    ),
    # At most one offline entry per user and client: a new login replaces it in place.
    sa.Index(
        OFFLINE_INDEX,
        "user_id",
        "client_id",
        unique=True,
        postgresql_where=sa.text(OFFLINE_PREDICATE),
        sqlite_where=sa.text(OFFLINE_PREDICATE),
    ),
)

# The audit trail (revision 0005): who did what to whose entry, never a token.
audit = sa.Table(
    "auth_vault_audit",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("at", TIME, nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("outcome", sa.Text(), nullable=False),
    sa.Column("caller", sa.Text(), nullable=True),
    sa.Column("user_id", sa.Text(), nullable=True),
    sa.Column("entry_id", sa.Text(), nullable=True),
    sa.Column("request_id", sa.Text(), nullable=True),
    sa.Column("client_address", sa.Text(), nullable=True),
    sa.Index("auth_vault_audit_at_idx", "at"),
    sa.Index("auth_vault_audit_user_id_idx", "user_id", "at"),
    sa.Index("auth_vault_audit_caller_idx", "caller", "at"),
)

# Back-channel logout tokens already seen (replay protection), kept until they expire.
seen_logout_token = sa.Table(
    "auth_vault_seen_logout_token",
    metadata,
    sa.Column("jti", sa.Text(), primary_key=True),
    sa.Column("expires_at", TIME, nullable=False),
)

# The outbox (revision 0007): what the app is told by webhook, written with the change it
# describes (an entry needing a new login, logged out, expired) and kept until delivered.
# The id is the webhook's idempotency key (``webhook-id``). Never a token.
event = sa.Table(
    "auth_vault_event",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("user_id", sa.Text(), nullable=False),
    sa.Column("entry_id", sa.Text(), nullable=True),
    sa.Column("token_type", sa.Text(), nullable=True),
    sa.Column("occurred_at", TIME, nullable=False),
    sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", TIME, nullable=False),
    # A delivery worker's claim, so replicas never send the same event at once.
    sa.Column("lease_owner", sa.Text(), nullable=True),
    sa.Column("lease_expires_at", TIME, nullable=True),
    sa.Column("delivered_at", TIME, nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
    sa.Index("auth_vault_event_state_idx", "state", "next_attempt_at"),
    sa.Index("auth_vault_event_occurred_at_idx", "occurred_at"),
)

# The delivery log: one row per attempt to deliver an event, with its outcome.
event_delivery = sa.Table(
    "auth_vault_event_delivery",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column(
        "event_id",
        sa.Text(),
        sa.ForeignKey("auth_vault_event.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("at", TIME, nullable=False),
    sa.Column("status", sa.Integer(), nullable=True),  # the HTTP status, if one came
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("worker", sa.Text(), nullable=False),
    sa.Index("auth_vault_event_delivery_event_id_idx", "event_id", "id"),
)

# The column list every ``SELECT`` of an entry reads, in the model's order.
COLUMNS = ", ".join(column.name for column in auth_vault.columns)

_POSITIONS = {column.name: position for position, column in enumerate(auth_vault.columns)}


# The column list every ``SELECT`` of an event reads, in the model's order.
EVENT_COLUMNS = ", ".join(column.name for column in event.columns)


def column_position(name: str) -> int:
    """Where column ``name`` stands in :data:`COLUMNS` (and so in a fetched record)."""
    return _POSITIONS[name]
