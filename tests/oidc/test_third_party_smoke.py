"""Smoke tests of the third-party OpenID providers in tests/support/third_party.py.

Each provider runs as a real process. The tests do what token-vault's login and
refresh need, with plain httpx: discovery, an authorization code + PKCE (S256) login
through the provider's own forms, the code exchange with client_secret_basic, ID
token signature check against the JWKS, a refresh, and what happens to the old
refresh token. ``Behaviour`` records where the two providers differ.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.third_party import (
    DjangoOAuthToolkit,
    NanoIdP,
    ThirdPartyProvider,
    ThirdPartyProviderError,
    login,
)

pytestmark = pytest.mark.slow
needs_nanoidp = pytest.mark.skipif(not NanoIdP.installed(), reason="pip install nanoidp")
needs_dot = pytest.mark.skipif(
    not DjangoOAuthToolkit.installed(), reason="pip install django-oauth-toolkit"
)

REDIRECT_URI = "http://127.0.0.1:8400/auth/callback"  # never fetched
POST_LOGOUT_URI = "http://127.0.0.1:8400/logged-out"


@dataclass(frozen=True)
class Behaviour:
    """Where the providers differ, as these tests found it."""

    # nanoidp's sub is the username; django-oauth-toolkit's is the user's primary key.
    subject_is_username: bool
    # email/name in the ID token (DOT: because dot_project's validator adds them;
    # nanoidp: only from userinfo, and there is no standard name claim at all).
    id_token_has_email_and_name: bool
    # A rotated-out refresh token presented again also revokes its successor.
    reuse_revokes_family: bool
    # revocation/introspection endpoints in the OpenID discovery document (DOT lists
    # them only in RFC 8414's .well-known/oauth-authorization-server).
    discovery_lists_revocation_and_introspection: bool
    # RP-initiated logout with id_token_hint also ends the refresh token.
    logout_revokes_refresh_token: bool


BEHAVIOUR = {
    "nanoidp": Behaviour(
        subject_is_username=True,
        id_token_has_email_and_name=False,
        reuse_revokes_family=True,
        discovery_lists_revocation_and_introspection=True,
        logout_revokes_refresh_token=False,
    ),
    "django-oauth-toolkit": Behaviour(
        subject_is_username=False,
        id_token_has_email_and_name=True,
        reuse_revokes_family=False,
        discovery_lists_revocation_and_introspection=False,
        logout_revokes_refresh_token=True,
    ),
}


@pytest.fixture(scope="module")
def nanoidp() -> Iterator[NanoIdP]:
    with NanoIdP(redirect_uris=[REDIRECT_URI]) as op:
        yield op


@pytest.fixture(scope="module")
def dot() -> Iterator[DjangoOAuthToolkit]:
    with DjangoOAuthToolkit(
        redirect_uris=[REDIRECT_URI], post_logout_redirect_uris=[POST_LOGOUT_URI]
    ) as op:
        yield op


@pytest.fixture(
    params=[
        pytest.param("nanoidp", marks=needs_nanoidp),
        pytest.param("django-oauth-toolkit", marks=needs_dot),
    ]
)
def provider(request: pytest.FixtureRequest) -> ThirdPartyProvider:
    fixture = {"nanoidp": "nanoidp", "django-oauth-toolkit": "dot"}[request.param]
    op: ThirdPartyProvider = request.getfixturevalue(fixture)
    return op


# -- a relying party in a few functions -----------------------------------------


@dataclass(frozen=True)
class Login:
    """An authorization request's secrets and the code the provider returned."""

    code: str
    verifier: str
    nonce: str


def log_in(
    op: ThirdPartyProvider, discovery: dict[str, Any], username: str, scopes: str | None = None
) -> Login:
    """Authorization code request with PKCE S256, through the provider's forms."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    query = {
        "response_type": "code",
        "client_id": op.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": scopes or " ".join(op.scopes),
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    callback = op.login(f"{discovery['authorization_endpoint']}?{urlencode(query)}", username)
    assert callback.startswith(REDIRECT_URI + "?")
    params = parse_qs(urlsplit(callback).query)
    assert params["state"] == [state]
    return Login(code=params["code"][0], verifier=verifier, nonce=nonce)


def token_request(op: ThirdPartyProvider, discovery: dict[str, Any], **form: str) -> httpx.Response:
    """POST to the token endpoint with client_secret_basic."""
    return httpx.post(discovery["token_endpoint"], data=form, auth=(op.client_id, op.client_secret))


def redeem(op: ThirdPartyProvider, discovery: dict[str, Any], grant: Login) -> httpx.Response:
    """Present the code (with its PKCE verifier) at the token endpoint."""
    return token_request(
        op,
        discovery,
        grant_type="authorization_code",
        code=grant.code,
        redirect_uri=REDIRECT_URI,
        code_verifier=grant.verifier,
    )


def exchange(op: ThirdPartyProvider, discovery: dict[str, Any], grant: Login) -> dict[str, Any]:
    """Redeem the code (with its PKCE verifier) for tokens."""
    resp = redeem(op, discovery, grant)
    assert resp.status_code == 200, resp.text
    tokens: dict[str, Any] = resp.json()
    return tokens


def refresh(op: ThirdPartyProvider, discovery: dict[str, Any], token: str) -> httpx.Response:
    """Use a refresh token (client_secret_basic)."""
    return token_request(op, discovery, grant_type="refresh_token", refresh_token=token)


def verified_id_token(
    op: ThirdPartyProvider, discovery: dict[str, Any], id_token: str, nonce: str | None
) -> dict[str, Any]:
    """Check the ID token's RS256 signature against the JWKS, then its claims."""
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    assert "kid" in token.header
    expected: dict[str, Any] = {
        "iss": {"essential": True, "value": op.issuer},
        "aud": {"essential": True, "value": op.client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if nonce is not None:
        expected["nonce"] = {"essential": True, "value": nonce}
    jwt.JWTClaimsRegistry(leeway=60, **expected).validate(token.claims)
    return dict(token.claims)


# -- the tests --------------------------------------------------------------------


def test_discovery_names_the_issuer_and_what_a_login_needs(provider: ThirdPartyProvider) -> None:
    op, discovery = provider, provider.discovery()
    assert discovery["issuer"] == op.issuer
    assert discovery["authorization_endpoint"].startswith(op.issuer + "/")
    assert discovery["token_endpoint"].startswith(op.issuer + "/")
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert "client_secret_basic" in discovery["token_endpoint_auth_methods_supported"]
    assert "RS256" in discovery["id_token_signing_alg_values_supported"]
    assert set(op.scopes) <= set(discovery["scopes_supported"])
    assert discovery["end_session_endpoint"].startswith(op.issuer + "/")
    # Neither provider does OpenID back-channel (or front-channel) logout.
    assert not discovery.get("backchannel_logout_supported")
    assert not discovery.get("frontchannel_logout_supported")
    listed = {"revocation_endpoint", "introspection_endpoint"} <= discovery.keys()
    assert listed == BEHAVIOUR[op.name].discovery_lists_revocation_and_introspection
    # RFC 8414 metadata under the issuer lists both in either case.
    metadata = httpx.get(f"{op.issuer}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == op.issuer
    assert {"revocation_endpoint", "introspection_endpoint"} <= metadata.keys()


def test_code_flow_with_pkce_then_refresh_rotates(provider: ThirdPartyProvider) -> None:
    op, behaviour = provider, BEHAVIOUR[provider.name]
    discovery = op.discovery()
    alice = op.users["alice"]
    grant = log_in(op, discovery, "alice")

    tokens = exchange(op, discovery, grant)
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert tokens["expires_in"] > 0
    assert set(tokens["scope"].split()) == set(op.scopes)
    # Neither reports the refresh token's lifetime or a session.
    assert not {"refresh_expires_in", "session_state"} & tokens.keys()

    claims = verified_id_token(op, discovery, tokens["id_token"], grant.nonce)
    assert (claims["sub"] == "alice") == behaviour.subject_is_username
    assert "sid" not in claims
    has_profile = claims.get("email") == alice.email and claims.get("name") == alice.name
    assert has_profile == behaviour.id_token_has_email_and_name

    # The code is single use.
    again = redeem(op, discovery, grant)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"

    # Refresh: a new access token, a new refresh token, a new ID token (same sub).
    first = refresh(op, discovery, tokens["refresh_token"])
    assert first.status_code == 200, first.text
    renewed = first.json()
    assert renewed["access_token"] != tokens["access_token"]
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert not {"refresh_expires_in", "session_state"} & renewed.keys()
    renewed_claims = verified_id_token(op, discovery, renewed["id_token"], nonce=None)
    assert renewed_claims["sub"] == claims["sub"]

    # The rotated-out refresh token is refused with invalid_grant ...
    reused = refresh(op, discovery, tokens["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # ... and with nanoidp that also revokes the one that replaced it.
    successor = refresh(op, discovery, renewed["refresh_token"])
    if behaviour.reuse_revokes_family:
        assert successor.status_code == 400
        assert successor.json()["error"] == "invalid_grant"
    else:
        assert successor.status_code == 200, successor.text


def test_a_refresh_token_comes_without_offline_access_too(provider: ThirdPartyProvider) -> None:
    discovery = provider.discovery()
    tokens = exchange(provider, discovery, log_in(provider, discovery, "alice", "openid email"))
    assert tokens["refresh_token"]
    assert tokens["scope"].split() == ["openid", "email"]
    assert refresh(provider, discovery, tokens["refresh_token"]).status_code == 200


def test_userinfo_has_email(provider: ThirdPartyProvider) -> None:
    discovery = provider.discovery()
    tokens = exchange(provider, discovery, log_in(provider, discovery, "bob"))
    resp = httpx.get(
        discovery["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert resp.status_code == 200, resp.text
    info = resp.json()
    assert info["email"] == "bob@example.org"
    assert info["preferred_username"] == "bob"
    if provider.name == "nanoidp":
        # No standard name claim: users.yaml names are custom attributes.
        assert "name" not in info
        assert info["attributes"]["name"] == "Bob Brown"
    else:
        assert info["name"] == "Bob Brown"


def test_revoked_refresh_token_is_refused(provider: ThirdPartyProvider) -> None:
    metadata = httpx.get(f"{provider.issuer}/.well-known/oauth-authorization-server").json()
    discovery = provider.discovery()
    tokens = exchange(provider, discovery, log_in(provider, discovery, "alice"))
    revoked = httpx.post(
        metadata["revocation_endpoint"],
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(provider.client_id, provider.client_secret),
    )
    assert revoked.status_code == 200, revoked.text
    resp = refresh(provider, discovery, tokens["refresh_token"])
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_rp_initiated_logout(provider: ThirdPartyProvider) -> None:
    discovery = provider.discovery()
    tokens = exchange(provider, discovery, log_in(provider, discovery, "alice"))
    params = {
        "id_token_hint": tokens["id_token"],
        "client_id": provider.client_id,
        "post_logout_redirect_uri": POST_LOGOUT_URI,
        "state": "bye",
    }
    resp = httpx.get(discovery["end_session_endpoint"], params=params)
    assert resp.status_code in (302, 303), resp.text
    assert resp.headers["location"] == f"{POST_LOGOUT_URI}?state=bye"
    after = refresh(provider, discovery, tokens["refresh_token"])
    revoked = after.status_code == 400 and after.json()["error"] == "invalid_grant"
    assert revoked == BEHAVIOUR[provider.name].logout_revokes_refresh_token, after.text


def test_wrong_password_is_refused(provider: ThirdPartyProvider) -> None:
    discovery = provider.discovery()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    with (
        httpx.Client(timeout=30.0) as browser,
        pytest.raises(ThirdPartyProviderError, match="did not accept 'alice'"),
    ):
        login(browser, f"{discovery['authorization_endpoint']}?{query}", "alice", "wrong")


@needs_nanoidp
def test_nanoidp_introspection_with_client_credentials(nanoidp: NanoIdP) -> None:
    discovery = nanoidp.discovery()
    tokens = exchange(nanoidp, discovery, log_in(nanoidp, discovery, "alice"))
    resp = httpx.post(
        discovery["introspection_endpoint"],
        data={"token": tokens["access_token"]},
        auth=(nanoidp.client_id, nanoidp.client_secret),
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["active"] is True
    assert resp.json()["sub"] == "alice"


@needs_dot
def test_dot_introspection_for_a_resource_server(dot: DjangoOAuthToolkit) -> None:
    """RFC 7662 at DOT: the caller authenticates as a registered client (HTTP Basic)
    or with a Bearer token that has the ``introspection`` scope."""
    discovery = dot.discovery()
    tokens = exchange(dot, discovery, log_in(dot, discovery, "alice"))
    service = (dot.service_client_id, dot.service_client_secret)

    basic = httpx.post(
        dot.introspection_endpoint, data={"token": tokens["access_token"]}, auth=service
    )
    assert basic.status_code == 200, basic.text
    assert basic.json()["active"] is True
    assert basic.json()["username"] == "alice"
    assert basic.json()["client_id"] == dot.client_id

    granted = httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": "introspection"},
        auth=service,
    )
    assert granted.status_code == 200, granted.text
    assert "refresh_token" not in granted.json()
    bearer = httpx.post(
        dot.introspection_endpoint,
        data={"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {granted.json()['access_token']}"},
    )
    assert bearer.status_code == 200, bearer.text
    assert bearer.json()["active"] is True

    unknown = httpx.post(dot.introspection_endpoint, data={"token": "no-such-token"}, auth=service)
    assert unknown.json() == {"active": False}
    anonymous = httpx.post(dot.introspection_endpoint, data={"token": tokens["access_token"]})
    assert anonymous.status_code in (401, 403)


@needs_dot
def test_dot_reuse_protection_revokes_the_family() -> None:
    with DjangoOAuthToolkit(redirect_uris=[REDIRECT_URI], reuse_protection=True) as op:
        discovery = op.discovery()
        tokens = exchange(op, discovery, log_in(op, discovery, "alice"))
        renewed = refresh(op, discovery, tokens["refresh_token"]).json()
        assert refresh(op, discovery, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        successor = refresh(op, discovery, renewed["refresh_token"])
        assert successor.status_code == 400
        assert successor.json()["error"] == "invalid_grant"


@needs_nanoidp
def test_stop_ends_the_process_and_removes_its_files() -> None:
    op = NanoIdP(redirect_uris=[REDIRECT_URI])
    with op:
        directory = op.directory
        assert directory is not None
        assert (directory / "config" / "settings.yaml").is_file()
        assert op.running
    assert not op.running
    assert not Path(directory).exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(op.discovery_url)
