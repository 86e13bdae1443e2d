"""``token-vault demo``: a short, real walk-through of the library."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta

from token_vault.config import VaultSettings
from token_vault.vault.core import utc_now
from token_vault.vault.entry import TokenType

__all__ = ["walkthrough"]


async def walkthrough(say: Callable[[str], None]) -> None:
    """Upsert twice, store offline tokens, read back, clean up; print what happens."""
    user = f"demo-{secrets.token_hex(3)}"
    expires = utc_now() + timedelta(days=30)
    async with await VaultSettings().open_vault() as vault:
        say(f"opened {vault!r}")
        first = await vault.upsert_refresh_token(
            user,
            secrets.token_urlsafe(48),
            expires,
            "session-1",
            {"email": f"{user}@example.test", "count": 1},
        )
        say(f"login:   upsert_refresh_token({user!r}) -> {first}")
        second = await vault.upsert_refresh_token(
            user, secrets.token_urlsafe(48), expires, "session-2", {"count": 2}
        )
        say(f"refresh: upsert_refresh_token({user!r}) -> {second} (same id: {first == second})")
        entry = await vault.get_refresh_token(user)
        assert entry is not None
        say(f"stored:  {entry!r}")
        say(f"         metadata merged in the database: {entry.metadata}")
        for n in range(2):
            await vault.store(
                user,
                secrets.token_urlsafe(48),
                token_type=TokenType.OFFLINE,
                expires_at=expires,
                metadata={"device": f"device-{n}"},
            )
        entries = await vault.list_tokens(user)
        kinds = ", ".join(e.token_type.value for e in entries)
        say(
            f"entries: {len(entries)} ({kinds}); tokens are AES-256-GCM sealed with key "
            f"{entry.key_id!r}"
        )
        removed = await vault.delete_user(user)
        say(f"cleanup: delete_user({user!r}) removed {removed} entries")
