"""Validate an OpenID Connect Back-Channel Logout 1.0 logout token, purely.

:func:`validate_logout_token` takes the raw ``logout_token`` form field, the provider's
signing keys, the expected issuer and audience (our client id) and the current time, and
returns the :class:`LogoutClaims` the caller acts on, or raises :class:`LogoutTokenError`.
It does no I/O: fetching the JWKS and reading the clock are the caller's job, so tests
fix both.

What it checks, in order, each failure with its own :attr:`LogoutTokenError.reason`::

    too_large               not at most 16 KiB of ASCII
    malformed               not a string, not three base64url segments, or a header or
                            payload that is not a JSON object (duplicate names, NaN refused)
    encrypted               a JWE (five segments): logout tokens here are signed, not encrypted
    unsigned                ``alg: none``
    disallowed_algorithm    ``alg`` is not in ``algorithms``
    unsupported_header      a ``crit`` or ``b64`` header (nothing here understands them)
    wrong_type              ``typ`` present and neither ``logout+jwt`` nor ``JWT``
    bad_signature           no key with that ``kid`` (and ``alg``/``use``), a key of the
                            wrong type for ``alg``, or a signature that does not verify
    wrong_issuer            ``iss`` missing or not the expected issuer
    wrong_audience          ``aud`` missing, or neither the audience nor a list holding it
    missing_iat             no ``iat``
    invalid_iat             ``iat`` not a finite number of seconds since the epoch
    iat_in_future           ``iat`` later than ``now + leeway``
    too_old                 ``iat`` earlier than ``now - max_age - leeway``
    invalid_exp             ``exp`` present and not a finite number
    expired                 ``exp`` earlier than ``now - leeway``
    missing_jti             ``jti`` absent
    invalid_jti             ``jti`` not a non-empty string of at most 255 characters
    missing_events          ``events`` absent
    invalid_events          ``events`` not a JSON object
    missing_logout_event    ``events`` lacks the back-channel-logout member
    invalid_logout_event    that member's value is not a JSON object
    invalid_sub             ``sub`` present and not a non-empty string
    invalid_sid             ``sid`` present and not a non-empty string
    missing_sub_and_sid     neither ``sub`` nor ``sid``
    nonce_present           a ``nonce`` claim (which would make it usable as an ID token)
    invalid_revoke_offline_access
                            Keycloak's ``revoke_offline_access`` present and not a boolean

**Replay is not checked here.** The spec asks the relying party to refuse a ``jti`` it has
already seen; that needs storage, so the caller records :attr:`LogoutClaims.jti` (with
:attr:`LogoutClaims.expires_at`, after which the record may be dropped) in the database
and refuses duplicates.

Error messages name the reason only: never the token, a claim value or a key.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from joserfc import jws
from joserfc.errors import (
    BadSignatureError,
    ExceededSizeError,
    InvalidKeyCurveError,
    InvalidKeyIdError,
    InvalidKeyLengthError,
    JoseError,
    KeyParameterError,
    MissingKeyError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

from token_vault.errors import LogoutTokenError

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "DEFAULT_ALGORITHMS",
    "MAX_LOGOUT_TOKEN_LENGTH",
    "LogoutClaims",
    "LogoutTokenError",
    "validate_logout_token",
]

_MAX_JTI = 255  # what the store of seen logout tokens keeps

BACKCHANNEL_LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"
"""The member of the ``events`` claim that makes a JWT a logout token."""

MAX_LOGOUT_TOKEN_LENGTH: Final = 16 * 1024
"""Longer tokens are refused before anything is decoded."""

DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "PS256", "EdDSA")
"""Asymmetric algorithms only: an HMAC would need the client secret as the key."""

_ACCEPTED_TYPES: Final = frozenset({"logout+jwt", "jwt"})

_DESCRIPTIONS: Final[dict[str, str]] = {
    "too_large": "the token is too long",
    "malformed": "the token is not a compact JWS with JSON object header and payload",
    "encrypted": "the token is encrypted (JWE); a signed JWT is expected",
    "unsigned": "the token is unsigned (alg none)",
    "disallowed_algorithm": "the signing algorithm is not allowed",
    "unsupported_header": "the token has a header parameter that is not supported",
    "wrong_type": "the typ header is neither logout+jwt nor JWT",
    "bad_signature": "the signature does not verify against the provider's keys",
    "wrong_issuer": "iss is missing or not the expected issuer",
    "wrong_audience": "aud is missing or does not contain the expected audience",
    "missing_iat": "iat is missing",
    "invalid_iat": "iat is not a number",
    "iat_in_future": "iat is in the future",
    "too_old": "iat is older than the accepted maximum age",
    "invalid_exp": "exp is not a number",
    "expired": "the token has expired",
    "missing_jti": "jti is missing",
    "invalid_jti": "jti is not a non-empty string of at most 255 characters",
    "missing_events": "events is missing",
    "invalid_events": "events is not a JSON object",
    "missing_logout_event": "events has no back-channel logout member",
    "invalid_logout_event": "the back-channel logout event is not a JSON object",
    "invalid_sub": "sub is not a non-empty string",
    "invalid_sid": "sid is not a non-empty string",
    "missing_sub_and_sid": "neither sub nor sid is present",
    "nonce_present": "a logout token must not contain nonce",
    "invalid_revoke_offline_access": "revoke_offline_access is not a boolean",
}


def _refused(reason: str) -> LogoutTokenError:
    return LogoutTokenError(reason, _DESCRIPTIONS.get(reason, "the token is invalid"))


@dataclass(frozen=True, slots=True)
class LogoutClaims:
    """What a valid logout token asks for.

    At least one of ``subject`` and ``session_id`` is set. ``expires_at`` is the token's
    ``exp``, or ``issued_at + max_age`` when it has none: the caller keeps ``jti`` at
    least until then to refuse replays.
    """

    issuer: str
    subject: str | None
    session_id: str | None
    jti: str
    issued_at: datetime
    expires_at: datetime
    revoke_offline_access: bool


def validate_logout_token(
    token: str,
    *,
    keys: KeySet,
    issuer: str,
    audience: str,
    now: datetime,
    leeway: timedelta = timedelta(seconds=60),
    max_age: timedelta = timedelta(minutes=5),
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
) -> LogoutClaims:
    """Validate ``token`` as a logout token and return its claims.

    :param token: the ``logout_token`` form field as received (anything but a ``str`` is
        refused as ``malformed``).
    :param keys: the provider's signing keys (its JWKS); the header's ``kid`` picks one.
    :param issuer: the provider's issuer identifier, compared exactly.
    :param audience: our client id; ``aud`` must be it or a list containing it.
    :param now: the current time, timezone-aware.
    :param leeway: clock skew tolerated on ``iat`` and ``exp``.
    :param max_age: how old ``iat`` may be (plus ``leeway``).
    :param algorithms: the signing algorithms accepted; ``none`` is never accepted.
    :raises LogoutTokenError: the token is refused; ``reason`` says why.
    :raises ValueError: the arguments are wrong (naive ``now``, ``none`` allowed, ...).

    The ``jti`` is **not** checked for replay here; see the module docstring.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(algorithms, str):
        raise ValueError("algorithms must be a sequence of names, not one string")
    if not algorithms or any(alg.lower() == "none" for alg in algorithms):
        raise ValueError("algorithms must be non-empty and must not contain 'none'")
    now = now.astimezone(UTC)

    header_segment = _split_compact(token)
    header = _decode_json_object(header_segment)
    _check_header(header, algorithms)
    payload = _verify_signature(token, keys, algorithms)
    claims = _parse_json_object(payload)
    return _check_claims(
        claims,
        issuer=issuer,
        audience=audience,
        now=now,
        leeway=leeway,
        max_age=max_age,
    )


def _split_compact(token: str) -> str:
    """Refuse what is not a compact JWS by shape, and return its header segment."""
    if not isinstance(token, str):
        raise _refused("malformed")
    if len(token) > MAX_LOGOUT_TOKEN_LENGTH:
        raise _refused("too_large")
    if not token.isascii():
        raise _refused("malformed")
    segments = token.split(".")
    if len(segments) == 5:
        raise _refused("encrypted")
    if len(segments) != 3 or not segments[0]:
        raise _refused("malformed")
    return segments[0]


def _check_header(header: dict[str, object], algorithms: Sequence[str]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise _refused("malformed")
    if alg.lower() == "none":
        raise _refused("unsigned")
    if alg not in algorithms:
        raise _refused("disallowed_algorithm")
    if "crit" in header or "b64" in header:
        raise _refused("unsupported_header")
    if "typ" in header:
        typ = header["typ"]
        if not isinstance(typ, str):
            raise _refused("wrong_type")
        # Media types compare case-insensitively; "application/" may be omitted (RFC 7515).
        typ = typ.lower().removeprefix("application/")
        if typ not in _ACCEPTED_TYPES:
            raise _refused("wrong_type")


def _verify_signature(token: str, keys: KeySet, algorithms: Sequence[str]) -> bytes:
    """Verify the signature with joserfc and return the (still unparsed) payload."""
    registry = jws.JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    try:
        signed = jws.deserialize_compact(token, keys, registry=registry)
    except ExceededSizeError as error:
        raise _refused("too_large") from error
    except UnsupportedAlgorithmError as error:
        raise _refused("disallowed_algorithm") from error
    except (
        BadSignatureError,
        InvalidKeyIdError,
        KeyParameterError,
        MissingKeyError,
        InvalidKeyCurveError,
        InvalidKeyLengthError,
    ) as error:
        raise _refused("bad_signature") from error
    except JoseError as error:
        raise _refused("malformed") from error
    except ValueError as error:
        # joserfc raises a bare ValueError for an unusable key (e.g. an empty HMAC key).
        raise _refused("bad_signature") from error
    return signed.payload


def _check_claims(
    claims: dict[str, object],
    *,
    issuer: str,
    audience: str,
    now: datetime,
    leeway: timedelta,
    max_age: timedelta,
) -> LogoutClaims:
    if claims.get("iss") != issuer:
        raise _refused("wrong_issuer")

    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise _refused("wrong_audience")

    if "iat" not in claims:
        raise _refused("missing_iat")
    issued_at = _numeric_date(claims["iat"], reason="invalid_iat")
    if issued_at > now + leeway:
        raise _refused("iat_in_future")
    if issued_at < now - max_age - leeway:
        raise _refused("too_old")

    if "exp" in claims:
        expires_at = _numeric_date(claims["exp"], reason="invalid_exp")
        if expires_at < now - leeway:
            raise _refused("expired")
    else:
        expires_at = issued_at + max_age

    if "jti" not in claims:
        raise _refused("missing_jti")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI or "\x00" in jti:
        raise _refused("invalid_jti")

    if "events" not in claims:
        raise _refused("missing_events")
    events = claims["events"]
    if not isinstance(events, dict):
        raise _refused("invalid_events")
    if BACKCHANNEL_LOGOUT_EVENT not in events:
        raise _refused("missing_logout_event")
    if not isinstance(events[BACKCHANNEL_LOGOUT_EVENT], dict):
        raise _refused("invalid_logout_event")

    subject = _optional_string(claims, "sub", reason="invalid_sub")
    session_id = _optional_string(claims, "sid", reason="invalid_sid")
    if subject is None and session_id is None:
        raise _refused("missing_sub_and_sid")

    if "nonce" in claims:
        raise _refused("nonce_present")

    revoke_offline_access = claims.get("revoke_offline_access", False)
    if not isinstance(revoke_offline_access, bool):
        raise _refused("invalid_revoke_offline_access")

    return LogoutClaims(
        issuer=issuer,
        subject=subject,
        session_id=session_id,
        jti=jti,
        issued_at=issued_at,
        expires_at=expires_at,
        revoke_offline_access=revoke_offline_access,
    )


def _numeric_date(value: object, *, reason: str) -> datetime:
    """An RFC 7519 NumericDate as an aware UTC datetime; booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refused(reason)
    if not math.isfinite(value):
        raise _refused(reason)
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise _refused(reason) from error


def _optional_string(claims: dict[str, object], name: str, *, reason: str) -> str | None:
    """``None`` when ``name`` is absent; the value when it is a non-empty string."""
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, str) or not value:
        raise _refused(reason)
    return value


def _decode_json_object(segment: str) -> dict[str, object]:
    """Decode one base64url segment holding a JSON object."""
    try:
        # Unpadded base64url, as JWS requires; validate=True refuses stray characters.
        raw = base64.b64decode(
            segment.translate(_FROM_URLSAFE) + "=" * (-len(segment) % 4), validate=True
        )
    except (binascii.Error, ValueError) as error:
        raise _refused("malformed") from error
    return _parse_json_object(raw)


_FROM_URLSAFE: Final = str.maketrans("-_", "+/")


def _parse_json_object(raw: bytes) -> dict[str, object]:
    """Parse ``raw`` as a JSON object, refusing duplicate names and NaN/Infinity."""
    try:
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_reject_duplicate_names,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _refused("malformed") from error
    if not isinstance(value, dict):
        raise _refused("malformed")
    return value


def _reject_duplicate_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")
