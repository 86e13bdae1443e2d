"""Logout tokens: valid ones give their claims, each malformed one its own refusal reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jws, jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from token_vault.oidc.logout_token import (
    BACKCHANNEL_LOGOUT_EVENT,
    MAX_LOGOUT_TOKEN_LENGTH,
    LogoutClaims,
    LogoutTokenError,
    validate_logout_token,
)

ISSUER = "https://id.example.test/realms/demo"
AUDIENCE = "token-vault-app"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
IAT = int(NOW.timestamp()) - 10

PROVIDER_KEY = RSAKey.generate_key(2048, parameters={"kid": "provider-1", "use": "sig"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "provider-1"})  # same kid, other key
KEYS = KeySet([RSAKey.import_key(PROVIDER_KEY.as_dict(private=False))])

Claims = dict[str, Any]


def base_claims(**changes: Any) -> Claims:
    claims: Claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": IAT,
        "exp": IAT + 120,
        "jti": "jti-0001",
        "sid": "session-1",
        "sub": "user-1",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    claims.update(changes)
    return claims


def without(*names: str, **changes: Any) -> Claims:
    claims = base_claims(**changes)
    for name in names:
        del claims[name]
    return claims


def sign(
    claims: Claims,
    *,
    key: RSAKey | ECKey | OKPKey = PROVIDER_KEY,
    header: dict[str, Any] | None = None,
    algorithms: list[str] | None = None,
) -> str:
    protected = {"alg": "RS256", "typ": "logout+jwt", "kid": key.kid}
    protected.update(header or {})
    return jwt.encode(protected, claims, key, algorithms=algorithms)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: bytes, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(payload)}.{b64(signature)}"


def validate(token: str, **overrides: Any) -> LogoutClaims:
    arguments: dict[str, Any] = {
        "keys": KEYS,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "now": NOW,
    }
    arguments.update(overrides)
    return validate_logout_token(token, **arguments)


# --- valid tokens --------------------------------------------------------------------------


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def other_public_key(*, kid: str) -> RSAKey:
    return RSAKey.import_key(OTHER_KEY.as_dict(private=False), parameters={"kid": kid})


VALID: list[tuple[str, Claims, LogoutClaims]] = [
    (
        "sid-only",
        without("sub"),
        LogoutClaims(ISSUER, None, "session-1", "jti-0001", at(IAT), at(IAT + 120), False),
    ),
    (
        "sub-only",
        without("sid"),
        LogoutClaims(ISSUER, "user-1", None, "jti-0001", at(IAT), at(IAT + 120), False),
    ),
    (
        "sub-and-sid",
        base_claims(),
        LogoutClaims(ISSUER, "user-1", "session-1", "jti-0001", at(IAT), at(IAT + 120), False),
    ),
    (
        "aud-as-list",
        base_claims(aud=["other-client", AUDIENCE]),
        LogoutClaims(ISSUER, "user-1", "session-1", "jti-0001", at(IAT), at(IAT + 120), False),
    ),
    (
        "revoke-offline-access",
        base_claims(revoke_offline_access=True),
        LogoutClaims(ISSUER, "user-1", "session-1", "jti-0001", at(IAT), at(IAT + 120), True),
    ),
    (
        "no-exp-expires-after-max-age",
        without("exp"),
        LogoutClaims(ISSUER, "user-1", "session-1", "jti-0001", at(IAT), at(IAT + 300), False),
    ),
    (
        "iat-slightly-in-future-within-leeway",
        base_claims(iat=IAT + 50),
        LogoutClaims(ISSUER, "user-1", "session-1", "jti-0001", at(IAT + 50), at(IAT + 120), False),
    ),
]


@pytest.mark.parametrize(
    ("claims", "expected"),
    [pytest.param(claims, expected, id=name) for name, claims, expected in VALID],
)
def test_valid_logout_token_gives_its_claims(claims: Claims, expected: LogoutClaims) -> None:
    assert validate(sign(claims)) == expected


@pytest.mark.parametrize("typ", ["logout+jwt", "JWT", "application/logout+jwt", None])
def test_accepted_typ_headers(typ: str | None) -> None:
    header: dict[str, Any] = {"alg": "RS256", "kid": "provider-1"}
    if typ is not None:
        header["typ"] = typ
    token = jwt.encode(header, base_claims(), PROVIDER_KEY)
    assert validate(token).session_id == "session-1"


def test_single_key_without_kid_is_used() -> None:
    token = jwt.encode({"alg": "RS256"}, base_claims(), PROVIDER_KEY)
    assert validate(token).subject == "user-1"


def test_key_is_picked_by_kid_among_several() -> None:
    rotated = RSAKey.generate_key(2048, parameters={"kid": "provider-2"})
    keys = KeySet([other_public_key(kid="old"), rotated, PROVIDER_KEY])
    assert validate(sign(base_claims()), keys=keys).jti == "jti-0001"


def test_es256_token_validates() -> None:
    ec_key = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    token = sign(base_claims(), key=ec_key, header={"alg": "ES256"})
    assert validate(token, keys=KeySet([ec_key])).session_id == "session-1"


# joserfc warns that the "EdDSA" name is deprecated by RFC 9864; providers still use it.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")
def test_eddsa_token_validates() -> None:
    okp_key = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
    token = sign(base_claims(), key=okp_key, header={"alg": "EdDSA"}, algorithms=["EdDSA"])
    assert validate(token, keys=KeySet([okp_key])).session_id == "session-1"


def test_issued_at_and_expires_at_are_aware_utc() -> None:
    claims = validate(sign(base_claims()))
    assert claims.issued_at.tzinfo is UTC
    assert claims.expires_at.tzinfo is UTC


def test_now_in_another_timezone_is_the_same_instant() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=2)))
    assert validate(sign(base_claims()), now=paris).issued_at == at(IAT)


# --- refused tokens ------------------------------------------------------------------------


def hs256_with_public_key_bytes() -> str:
    """Algorithm confusion: HMAC keyed with the provider's public key, as published.

    joserfc refuses to build such an HMAC key, so the token is forged by hand.
    """
    header = {"alg": "HS256", "typ": "logout+jwt", "kid": "provider-1"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(base_claims()).encode())}"
    public_pem = PROVIDER_KEY.as_pem(private=False)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def rs256_with_raw_header(header: dict[str, Any]) -> str:
    """A correct RS256 signature over a header joserfc would not let us sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(base_claims()).encode())}"
    private_key = PROVIDER_KEY.get_op_key("sign")
    signature = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def alg_none() -> str:
    return raw_token({"alg": "none", "typ": "logout+jwt"}, json.dumps(base_claims()).encode(), b"")


def truncated_signature() -> str:
    token = sign(base_claims())
    return token[:-10]


def tampered_payload() -> str:
    header, _, signature = sign(base_claims()).split(".")
    forged = b64(json.dumps(base_claims(sub="admin")).encode())
    return f"{header}.{forged}.{signature}"


def jwe_shaped() -> str:
    return "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVy.dGFn"


def signed_payload(payload: bytes) -> str:
    """A correctly signed token whose payload is arbitrary bytes."""
    return jws.serialize_compact(
        {"alg": "RS256", "kid": "provider-1"}, payload, PROVIDER_KEY, algorithms=["RS256"]
    )


REFUSED: list[tuple[str, Callable[[], str], str]] = [
    # shape
    ("garbage", lambda: "not a jwt at all", "malformed"),
    ("two-segments", lambda: "eyJhbGciOiJSUzI1NiJ9.e30", "malformed"),
    ("header-not-json", lambda: "bm90IGpzb24.e30.c2ln", "malformed"),
    ("header-not-object", lambda: f"{b64(b'[1]')}.e30.c2ln", "malformed"),
    ("header-without-alg", lambda: raw_token({"typ": "JWT"}, b"{}", b"sig"), "malformed"),
    ("non-ascii", lambda: sign(base_claims()) + "é", "malformed"),
    ("too-large", lambda: "a" * (MAX_LOGOUT_TOKEN_LENGTH + 1), "too_large"),
    ("jwe", jwe_shaped, "encrypted"),
    ("payload-not-json", lambda: signed_payload(b"not json"), "malformed"),
    ("payload-not-object", lambda: signed_payload(b'["iss"]'), "malformed"),
    (
        "payload-duplicate-claim",
        lambda: signed_payload(b'{"iss": "https://evil.test", "iss": "' + ISSUER.encode() + b'"}'),
        "malformed",
    ),
    # header and signature
    ("alg-none", alg_none, "unsigned"),
    ("hs256-with-public-key-bytes", hs256_with_public_key_bytes, "disallowed_algorithm"),
    (
        "alg-not-allowed",
        lambda: sign(base_claims(), header={"alg": "RS512"}, algorithms=["RS512"]),
        "disallowed_algorithm",
    ),
    (
        "crit-header",
        lambda: rs256_with_raw_header({"alg": "RS256", "kid": "provider-1", "crit": ["x"], "x": 1}),
        "unsupported_header",
    ),
    (
        "b64-header",
        lambda: rs256_with_raw_header({"alg": "RS256", "kid": "provider-1", "b64": True}),
        "unsupported_header",
    ),
    ("wrong-typ", lambda: sign(base_claims(), header={"typ": "at+jwt"}), "wrong_type"),
    ("typ-not-string", lambda: raw_token({"alg": "RS256", "typ": 1}, b"{}", b"s"), "wrong_type"),
    ("signed-by-another-key", lambda: sign(base_claims(), key=OTHER_KEY), "bad_signature"),
    (
        "unknown-kid",
        lambda: sign(base_claims(), header={"kid": "provider-9"}),
        "bad_signature",
    ),
    ("truncated-signature", truncated_signature, "bad_signature"),
    ("tampered-payload", tampered_payload, "bad_signature"),
    ("empty-signature", lambda: sign(base_claims()).rsplit(".", 1)[0] + ".", "bad_signature"),
    # claims
    ("missing-iss", lambda: sign(without("iss")), "wrong_issuer"),
    ("wrong-iss", lambda: sign(base_claims(iss=ISSUER + "-other")), "wrong_issuer"),
    ("missing-aud", lambda: sign(without("aud")), "wrong_audience"),
    ("wrong-aud", lambda: sign(base_claims(aud="another-client")), "wrong_audience"),
    ("aud-list-without-us", lambda: sign(base_claims(aud=["a", "b"])), "wrong_audience"),
    ("missing-iat", lambda: sign(without("iat")), "missing_iat"),
    ("iat-not-a-number", lambda: sign(base_claims(iat="1748779190")), "invalid_iat"),
    ("iat-boolean", lambda: sign(base_claims(iat=True)), "invalid_iat"),
    ("iat-huge", lambda: sign(base_claims(iat=10**30)), "invalid_iat"),
    ("iat-in-future", lambda: sign(base_claims(iat=IAT + 600)), "iat_in_future"),
    ("iat-too-old", lambda: sign(base_claims(iat=IAT - 600, exp=IAT + 600)), "too_old"),
    ("exp-not-a-number", lambda: sign(base_claims(exp="soon")), "invalid_exp"),
    ("expired", lambda: sign(base_claims(exp=IAT - 100)), "expired"),
    ("missing-jti", lambda: sign(without("jti")), "missing_jti"),
    ("empty-jti", lambda: sign(base_claims(jti="")), "invalid_jti"),
    ("jti-not-string", lambda: sign(base_claims(jti=42)), "invalid_jti"),
    ("missing-events", lambda: sign(without("events")), "missing_events"),
    (
        "events-not-object",
        lambda: sign(base_claims(events=[BACKCHANNEL_LOGOUT_EVENT])),
        "invalid_events",
    ),
    (
        "events-without-backchannel-member",
        lambda: sign(base_claims(events={"http://schemas.openid.net/event/other": {}})),
        "missing_logout_event",
    ),
    (
        "backchannel-member-not-object",
        lambda: sign(base_claims(events={BACKCHANNEL_LOGOUT_EVENT: True})),
        "invalid_logout_event",
    ),
    ("neither-sub-nor-sid", lambda: sign(without("sub", "sid")), "missing_sub_and_sid"),
    ("empty-sub", lambda: sign(without("sid", sub="")), "invalid_sub"),
    ("sid-not-string", lambda: sign(base_claims(sid=7)), "invalid_sid"),
    ("nonce", lambda: sign(base_claims(nonce="n-0S6_WzA2Mj")), "nonce_present"),
    (
        "revoke-offline-access-not-bool",
        lambda: sign(base_claims(revoke_offline_access="true")),
        "invalid_revoke_offline_access",
    ),
]


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [pytest.param(make, reason, id=name) for name, make, reason in REFUSED],
)
def test_malformed_logout_token_is_refused_with_its_reason(
    make_token: Callable[[], str], reason: str
) -> None:
    token = make_token()
    with pytest.raises(LogoutTokenError) as caught:
        validate(token)
    assert caught.value.reason == reason
    assert token not in str(caught.value)
    for segment in token.split("."):
        if len(segment) > 8:
            assert segment not in str(caught.value)


@pytest.mark.parametrize("value", [None, b"eyJ.e30.c2ln", 42], ids=["none", "bytes", "int"])
def test_non_string_token_is_refused(value: object) -> None:
    with pytest.raises(LogoutTokenError) as caught:
        validate(value)  # type: ignore[arg-type]
    assert caught.value.reason == "malformed"


def test_hs256_with_public_key_bytes_is_refused_even_if_hs256_were_allowed() -> None:
    with pytest.raises(LogoutTokenError) as caught:
        validate(hs256_with_public_key_bytes(), algorithms=("RS256", "HS256"))
    assert caught.value.reason == "bad_signature"


def test_key_marked_for_encryption_is_not_used_to_verify() -> None:
    enc_key = RSAKey.import_key(
        PROVIDER_KEY.as_dict(private=False), parameters={"kid": "provider-1", "use": "enc"}
    )
    with pytest.raises(LogoutTokenError) as caught:
        validate(sign(base_claims()), keys=KeySet([enc_key]))
    assert caught.value.reason == "bad_signature"


def test_token_older_than_max_age_is_accepted_with_a_larger_max_age() -> None:
    token = sign(base_claims(iat=IAT - 600, exp=IAT + 600))
    claims = validate(token, max_age=timedelta(minutes=15))
    assert claims.issued_at == at(IAT - 600)


def test_leeway_is_configurable() -> None:
    token = sign(base_claims(iat=IAT + 50))
    with pytest.raises(LogoutTokenError) as caught:
        validate(token, leeway=timedelta(seconds=5))
    assert caught.value.reason == "iat_in_future"


def test_error_message_never_contains_the_token() -> None:
    token = sign(base_claims(iss="https://attacker.test", sid="secret-session-id"))
    with pytest.raises(LogoutTokenError) as caught:
        validate(token)
    message = str(caught.value)
    assert caught.value.reason == "wrong_issuer"
    assert token not in message
    assert "attacker.test" not in message
    assert "secret-session-id" not in message
    assert all(part not in message for part in token.split("."))
    assert (
        message == "logout token refused (wrong_issuer): iss is missing or not the expected issuer"
    )


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate(sign(base_claims()), now=NOW.replace(tzinfo=None))


def test_allowing_alg_none_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="none"):
        validate(sign(base_claims()), algorithms=("RS256", "none"))


def test_replayed_jti_is_not_detected_here() -> None:
    """Replay detection needs storage: the caller records ``jti`` until ``expires_at``."""
    token = sign(base_claims())
    assert validate(token) == validate(token)


def test_raw_header_helper_signs_correctly() -> None:
    """Keeps the crit/b64 cases honest: they are refused for the header, not the signature."""
    assert validate(rs256_with_raw_header({"alg": "RS256", "kid": "provider-1"})).jti == "jti-0001"


def test_algorithms_as_one_string_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sequence"):
        validate(sign(base_claims()), algorithms="RS256")


def test_a_jti_longer_than_the_store_keeps_is_refused_not_a_503() -> None:
    with pytest.raises(LogoutTokenError) as refused:
        validate(sign(base_claims(jti="j" * 256)))
    assert refused.value.reason == "invalid_jti"
    assert validate(sign(base_claims(jti="j" * 255))).jti == "j" * 255
