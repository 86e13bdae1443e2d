"""Bad input is refused before anything is written, with an error naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from token_vault import TokenVault, ValidationError

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
GOOD: dict[str, Any] = {
    "user_id": "alice",
    "token": "rt-good-7f3a9c2e1b",
    "expires_at": EXPIRES,
    "session_state": "sid-1",
    "metadata": {"email": "alice@example.test"},
}


class Unserialisable:
    pass


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("user_id", {"user_id": ""}),
    ("user_id", {"user_id": "x" * 256}),
    ("user_id", {"user_id": "ali\x00ce"}),
    ("user_id", {"user_id": 42}),
    ("user_id", {"user_id": "\ud800"}),
    ("token", {"token": ""}),
    ("token", {"token": "t" * (16 * 1024 + 1)}),
    ("token", {"token": "to\x00ken"}),
    ("token", {"token": None}),
    ("expires_at", {"expires_at": datetime(2030, 1, 1)}),  # naive
    ("expires_at", {"expires_at": "2030-01-01T00:00:00Z"}),
    ("session_state", {"session_state": ""}),
    ("session_state", {"session_state": "s\x00"}),
    ("session_state", {"session_state": "s" * 256}),
    ("metadata", {"metadata": ["not", "an", "object"]}),
    ("metadata", {"metadata": "{}"}),
    ("metadata", {"metadata": {"k": Unserialisable()}}),
    ("metadata", {"metadata": {"k": float("nan")}}),
    ("metadata", {"metadata": {"k": float("inf")}}),
    ("metadata", {"metadata": {1: "non-string key"}}),
    ("metadata", {"metadata": {"k": "nul\x00inside"}}),
    ("metadata", {"metadata": {"nul\x00key": 1}}),
    ("metadata", {"metadata": {"deep": [[["\x00"]]]}}),
    ("metadata", {"metadata": {"big": "x" * (64 * 1024)}}),
    ("metadata", {"metadata": {"bytes": b"raw"}}),
]


async def table_state(vault: TokenVault) -> list[tuple[str, str, dict[str, Any]]]:
    entries = await vault.list_tokens("alice")
    return [(e.id, e.token, e.metadata) for e in entries]


@pytest.mark.parametrize(("field", "change"), BAD_INPUTS)
async def test_bad_upsert_is_refused_and_changes_nothing(
    vault: TokenVault, field: str, change: dict[str, Any]
) -> None:
    await vault.upsert_refresh_token(**GOOD)
    before = await table_state(vault)
    with pytest.raises(ValidationError) as error:
        await vault.upsert_refresh_token(**{**GOOD, **change})
    assert error.value.field == field
    assert await table_state(vault) == before


@pytest.mark.parametrize(("field", "change"), BAD_INPUTS[:12])
async def test_bad_store_is_refused_and_changes_nothing(
    vault: TokenVault, field: str, change: dict[str, Any]
) -> None:
    args = {**GOOD, **change}
    with pytest.raises(ValidationError) as error:
        await vault.store(
            args["user_id"],
            args["token"],
            token_type="offline",
            expires_at=args["expires_at"],
            session_state=args["session_state"],
        )
    assert error.value.field == field
    assert await table_state(vault) == []


async def test_unknown_token_type_is_refused(vault: TokenVault) -> None:
    with pytest.raises(ValidationError) as error:
        await vault.store("alice", "t", token_type="access", expires_at=EXPIRES)
    assert error.value.field == "token_type"
    with pytest.raises(ValidationError):
        await vault.list_tokens("alice", "bogus")
    assert await table_state(vault) == []


async def test_error_messages_do_not_echo_the_value(vault: TokenVault) -> None:
    secret = "super-secret-refresh-token-\x00"
    with pytest.raises(ValidationError) as error:
        await vault.upsert_refresh_token("alice", secret, EXPIRES)
    assert "super-secret" not in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "'); DROP TABLE auth_vault; --",
        "quote \" and ' and \\ backslash",
        "emoji 🔐🗝️ and ñ, 中文, עברית",
        "$1 $$ :name ?1 %s {}",
    ],
)
async def test_hostile_text_is_stored_verbatim(vault: TokenVault, text: str) -> None:
    entry_id = await vault.upsert_refresh_token(
        text, text, EXPIRES, text, {text: text, "nested": {text: [text]}}
    )
    await vault.upsert_refresh_token(text, text + "2", EXPIRES, text, {"more": text})
    entry = await vault.retrieve(entry_id)
    assert entry is not None
    assert entry.user_id == text
    assert entry.token == text + "2"
    assert entry.session_state == text
    assert entry.metadata[text] == text
    assert entry.metadata["nested"] == {text: [text]}
    assert entry.metadata["more"] == text
    assert len(await vault.list_tokens(text)) == 1
