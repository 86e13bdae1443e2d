"""The usual way: SQLAlchemy's async engine and ORM, select the row, then update or insert.

This is the seed's "before", written as a competent Python developer would: one
session per call, one transaction, the row locked with ``SELECT ... FOR UPDATE`` so two
refreshes of one user do not lose each other's metadata, the metadata merged in Python,
and the same ``Keyring.seal`` call the vault makes. The engine's pool holds one
connection per caller, like the vault's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, LargeBinary, Text, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.workload import REFRESH, Payload, stamp

__all__ = ["AuthVault", "UsualWay"]


class Base(DeclarativeBase):
    pass


class AuthVault(Base):
    """The ``auth_vault`` table as an ORM class."""

    __tablename__ = "auth_vault"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    token_type: Mapped[str] = mapped_column(Text)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    key_id: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    session_state: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsualWay:
    """``upsert_refresh_token`` as select-then-update-or-insert in an ORM transaction."""

    def __init__(self, engine: AsyncEngine, payload: Payload) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._keyring = payload.keyring

    @classmethod
    def open(cls, dsn: str, payload: Payload, *, pool_size: int) -> UsualWay:
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
        return cls(engine, payload)

    async def upsert_refresh_token(
        self,
        user_id: str,
        token: str,
        expires_at: datetime,
        session_state: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        sealed = self._keyring.seal(token, user_id=user_id, token_type=REFRESH)
        now = datetime.now(UTC)
        async with self._sessions.begin() as session:
            row = await session.scalar(
                select(AuthVault)
                .where(AuthVault.user_id == user_id, AuthVault.token_type == REFRESH)
                .with_for_update()
            )
            merged = {**(row.metadata_ if row else {}), **(metadata or {}), "updatedAt": stamp(now)}
            if row is None:
                row = AuthVault(
                    id=str(uuid.uuid4()),
                    user_id=user_id,
                    token_type=REFRESH,
                    created_at=now,
                )
                session.add(row)
            row.ciphertext = sealed.ciphertext
            row.nonce = sealed.nonce
            row.key_id = sealed.key_id
            row.expires_at = expires_at
            row.session_state = session_state
            row.metadata_ = merged
            row.updated_at = now
            return row.id

    async def close(self) -> None:
        await self._engine.dispose()
