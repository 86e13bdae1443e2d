"""Reads, deletes and purges, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from token_vault import TokenType, TokenVault

NOW = datetime(2030, 1, 1, tzinfo=UTC)


async def test_get_refresh_token_returns_decrypted_entry(vault: TokenVault) -> None:
    assert await vault.get_refresh_token("nobody") is None
    await vault.upsert_refresh_token("alice", "secret-refresh", NOW, "sid-1", {"a": 1})
    entry = await vault.get_refresh_token("alice")
    assert entry is not None
    assert entry.token == "secret-refresh"
    assert entry.user_id == "alice"
    assert entry.expires_at == NOW
    assert entry.expires_at.tzinfo is not None


async def test_retrieve_unknown_id_is_none(vault: TokenVault) -> None:
    assert await vault.retrieve("no-such-id") is None


async def test_entry_repr_masks_the_token(vault: TokenVault) -> None:
    await vault.upsert_refresh_token("alice", "very-secret-token-value", NOW)
    entry = await vault.get_refresh_token("alice")
    assert entry is not None
    assert "very-secret-token-value" not in repr(entry)
    assert "masked" in repr(entry)
    assert "very-secret-token-value" not in repr(vault)


async def test_delete_and_delete_user(vault: TokenVault) -> None:
    refresh = await vault.upsert_refresh_token("alice", "r", NOW)
    offline = await vault.store("alice", "o", token_type="offline", expires_at=NOW)
    await vault.upsert_refresh_token("bob", "r", NOW)
    assert await vault.delete(offline) is True
    assert await vault.delete(offline) is False
    assert await vault.retrieve(refresh) is not None
    assert await vault.delete_user("alice") == 1
    assert await vault.list_tokens("alice") == []
    assert len(await vault.list_tokens("bob")) == 1


async def test_delete_session_only_touches_that_session(vault: TokenVault) -> None:
    await vault.upsert_refresh_token("alice", "r", NOW, "sid-a")
    await vault.store("alice", "o", token_type="offline", expires_at=NOW, session_state="sid-a")
    await vault.upsert_refresh_token("bob", "r", NOW, "sid-b")
    assert await vault.delete_session("sid-a", token_type=TokenType.REFRESH) == 1
    remaining = await vault.list_tokens("alice")
    assert [e.token_type for e in remaining] == [TokenType.OFFLINE]
    assert await vault.delete_session("sid-a") == 1
    assert len(await vault.list_tokens("bob")) == 1


async def test_purge_expired_removes_only_expired(vault: TokenVault) -> None:
    await vault.upsert_refresh_token("old", "r", NOW - timedelta(seconds=1))
    await vault.store("old", "o", token_type="offline", expires_at=NOW + timedelta(days=1))
    await vault.upsert_refresh_token("new", "r", NOW + timedelta(hours=1))
    assert await vault.purge_expired_at(NOW) == 1
    assert await vault.get_refresh_token("old") is None
    assert len(await vault.list_tokens("old")) == 1
    assert await vault.get_refresh_token("new") is not None
