"""Input checks that run before anything is written. Errors name the field, never the value."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from token_vault.errors import ValidationError
from token_vault.vault.entry import TokenType

__all__ = [
    "MAX_ID_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_TOKEN_BYTES",
    "check_expires_at",
    "check_identifier",
    "check_metadata",
    "check_token",
    "check_token_type",
]

MAX_ID_CHARS = 255
MAX_TOKEN_BYTES = 16 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32


def _check_text(field: str, value: object, *, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    if "\x00" in value:
        raise ValidationError(field, "must not contain the NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(field, "must be valid Unicode (no lone surrogates)") from None
    if size > max_bytes:
        raise ValidationError(field, f"is {size} bytes; the limit is {max_bytes}")
    return value


def check_identifier(field: str, value: object) -> str:
    """A user id, entry id or session id: 1-255 characters, no NUL."""
    text = _check_text(field, value, max_bytes=4 * MAX_ID_CHARS)
    if len(text) > MAX_ID_CHARS:
        raise ValidationError(field, f"is {len(text)} characters; the limit is {MAX_ID_CHARS}")
    return text


def check_token(value: object, *, field: str = "token") -> str:
    return _check_text(field, value, max_bytes=MAX_TOKEN_BYTES)


def check_token_type(value: object) -> TokenType:
    allowed = ", ".join(t.value for t in TokenType)
    if not isinstance(value, str):
        raise ValidationError("token_type", f"must be one of: {allowed}")
    try:
        return TokenType(value)
    except ValueError:
        raise ValidationError("token_type", f"must be one of: {allowed}") from None


def check_expires_at(value: object, *, field: str = "expires_at") -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError(field, "must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must be timezone-aware (e.g. UTC)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last datetime in UTC
        raise ValidationError(field, "is out of range") from None


def check_metadata(value: object) -> str | None:
    """Validate metadata and return it as compact JSON text (``None`` stays ``None``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("metadata", "must be a JSON object (a dict with string keys)")
    _check_json_value(value, depth=0)
    try:
        text = json.dumps(dict(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            "metadata", f"is not JSON-serialisable: {type(exc).__name__}"
        ) from None
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata", f"is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return text


def _check_json_value(value: Any, *, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValidationError("metadata", f"is nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("metadata", "numbers must be finite (no NaN or Infinity)")
        return
    if isinstance(value, str):
        _check_json_string(value)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError("metadata", "object keys must be strings")
            _check_json_string(key)
            _check_json_value(item, depth=depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json_value(item, depth=depth + 1)
        return
    raise ValidationError("metadata", f"holds a {type(value).__name__}, which is not JSON")


def _check_json_string(text: str) -> None:
    if "\x00" in text:
        raise ValidationError("metadata", "must not contain the NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("metadata", "must be valid Unicode (no lone surrogates)") from None
