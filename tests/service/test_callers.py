"""Who may take whose token: strict caller tokens, the caller policy, the audit trail."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.oidc import serve
from tests.support.service import Service, assert_problem, bearer
from token_vault.service.app import create_app
from token_vault.service.devprovider import free_port
from token_vault.service.settings import ServiceSettings
from token_vault.testing.pgcluster import PgCluster

POLICY = {
    "callers": {
        "everything": {"actions": ["token", "read", "write", "delete", "audit"], "users": "*"},
        "patterned": {"actions": ["token", "read"], "users": {"pattern": "pol-.*"}},
        "consenting": {"actions": ["token"], "users": "consented"},
        "reader": {"actions": ["read"], "users": "*"},
    }
}
ALL_SCOPES = "vault:token vault:read vault:write vault:delete vault:audit"


@pytest.fixture(scope="module")
def policed(service: Service) -> Iterator[str]:
    """A second app on the same database and provider, with a caller policy."""
    port = free_port()
    env = {**service.env, "TOKEN_VAULT_CALLER_POLICY": json.dumps(POLICY)}
    env.pop("EXTRA_PORTS", None)
    settings = ServiceSettings.model_validate(
        {k.removeprefix("TOKEN_VAULT_").lower(): v for k, v in env.items()}
    )
    with serve(create_app(settings), port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def api(policed: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=policed, timeout=30.0) as http:
        yield http


def as_caller(service: Service, client_id: str, **claims: Any) -> dict[str, str]:
    return bearer(service.forged_token(client_id=client_id, scope=ALL_SCOPES, **claims))


async def test_a_caller_not_in_the_policy_is_refused_whatever_its_scopes(
    service: Service, api: httpx.AsyncClient
) -> None:
    stranger = as_caller(service, "stranger")
    for method, path in [
        ("POST", "/v1/users/u1/access-token"),
        ("GET", "/v1/users/u1/tokens"),
        ("DELETE", "/v1/users/u1/tokens"),
        ("GET", "/v1/audit"),
    ]:
        refused = await api.request(method, path, headers=stranger)
        assert assert_problem(refused, 403)["detail"].endswith("(caller_not_in_policy)")


async def test_the_policy_limits_actions_and_users(
    service: Service, api: httpx.AsyncClient
) -> None:
    patterned = as_caller(service, "patterned")
    allowed = await api.post("/v1/users/pol-someone/access-token", headers=patterned)
    assert assert_problem(allowed, 409)["reason"] == "no_refresh_token"  # allowed, no entry
    other_user = await api.post("/v1/users/someone-else/access-token", headers=patterned)
    assert assert_problem(other_user, 403)["detail"].endswith("(user_not_matched)")
    deleting = await api.delete("/v1/users/pol-someone/tokens", headers=patterned)
    assert assert_problem(deleting, 403)["detail"].endswith("(action_not_allowed)")


async def test_consent_is_recorded_by_the_app_and_cannot_be_written_by_a_caller(
    service: Service, api: httpx.AsyncClient
) -> None:
    consenting = as_caller(service, "consenting")
    before = await api.post("/v1/users/con-user/access-token", headers=consenting)
    assert assert_problem(before, 403)["detail"].endswith("(no_consent)")
    body = {
        "refresh_token": "rt-consent",
        "expires_at": "2030-01-01T00:00:00Z",
        "metadata": {"consent": ["consenting"]},
    }
    everything = as_caller(service, "everything")
    planted = await api.put("/v1/users/con-user/refresh-token", json=body, headers=everything)
    assert assert_problem(planted, 400)["field"] == "metadata"
    for key in ("refreshCount", "provider", "loginTime", "updatedAt", "lastRefresh"):
        body["metadata"] = {key: 1}
        refused = await api.put("/v1/users/con-user/refresh-token", json=body, headers=everything)
        assert assert_problem(refused, 400)["field"] == "metadata"
    listed = await api.get("/v1/users/con-user/tokens", headers=everything)
    assert listed.json()["entries"] == []


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"typ": "JWT"}, {"nonce": "n-1"}, "an ID token"),
        ({"typ": "JWT"}, {"typ": "Refresh"}, "a Keycloak refresh token"),
        ({"typ": "JWT"}, {"typ": "Offline"}, "a Keycloak offline token"),
        ({"typ": "JWT"}, {"events": {"logout": {}}}, "a logout token"),
        ({"typ": "JWT"}, {"token_use": "id"}, "a Cognito ID token"),
        ({}, {"exp": int(time.time()) + 10 * 365 * 86400}, "ten years of life"),
        ({}, {"aud": "another-api"}, "another audience"),
        ({}, {"client_id": None, "azp": None}, "no client"),
    ],
)
async def test_tokens_that_are_not_access_tokens_for_this_api_are_401(
    service: Service,
    api: httpx.AsyncClient,
    header: dict[str, str],
    claims: dict[str, Any],
    reason: str,
) -> None:
    claims = {"client_id": "everything", "scope": ALL_SCOPES, **claims}
    forged = service.forged_token(header=header, **claims)
    refused = await api.get("/v1/users/u1/tokens", headers=bearer(forged))
    assert_problem(refused, 401)


async def test_scp_arrays_count_and_scope_splits_on_spaces_only(
    service: Service, api: httpx.AsyncClient
) -> None:
    scp = service.forged_token(client_id="reader", scope=None, scp=["vault:read"])
    assert (await api.get("/v1/users/u1/tokens", headers=bearer(scp))).status_code == 200
    plain = service.forged_token(client_id="reader", header={"typ": "JWT"}, scope="vault:read")
    assert (await api.get("/v1/users/u1/tokens", headers=bearer(plain))).status_code == 200
    commas = service.forged_token(client_id="reader", scope="vault:token,vault:read")
    assert_problem(await api.get("/v1/users/u1/tokens", headers=bearer(commas)), 403)


async def test_every_handout_is_audited_and_readable_by_an_auditor(
    service: Service, api: httpx.AsyncClient
) -> None:
    await asyncio.to_thread(service.log_in, "aud-user")
    everything = as_caller(service, "everything")
    handed = await api.post(
        "/v1/users/aud-user/access-token", headers={**everything, "X-Request-ID": "req-aud-1"}
    )
    assert handed.status_code == 200
    assert handed.headers["cache-control"].startswith("no-store")
    trail = await api.get("/v1/audit", params={"user": "aud-user"}, headers=everything)
    assert trail.status_code == 200
    records = trail.json()["records"]
    handout = next(r for r in records if r["action"] == "token")
    assert handout["caller"] == "everything"
    assert handout["request_id"] == "req-aud-1"
    assert handout["client_address"] == "127.0.0.1"
    assert handout["outcome"] in ("cached", "refreshed")
    assert handed.json()["access_token"] not in trail.text
    assert any(r["action"] == "login" for r in records)
    only_reader = await api.get("/v1/audit", headers=as_caller(service, "reader"))
    assert_problem(only_reader, 403)


async def test_a_handout_that_cannot_be_audited_does_not_happen(
    service: Service, pg_cluster: PgCluster, api: httpx.AsyncClient
) -> None:
    await asyncio.to_thread(service.log_in, "strict-user")
    database = service.database_url.rsplit("/", 1)[1].split("?")[0]
    pg_cluster.psql("ALTER TABLE auth_vault_audit RENAME TO audit_away", database=database)
    try:
        refused = await api.post(
            "/v1/users/strict-user/access-token", headers=as_caller(service, "everything")
        )
    finally:
        pg_cluster.psql("ALTER TABLE audit_away RENAME TO auth_vault_audit", database=database)
    assert_problem(refused, 503)
    assert "access_token" not in refused.text
