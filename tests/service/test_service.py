"""The service through HTTP: the real app, the real provider process, real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.support import ROOT
from tests.support.oidc import (
    expire_cached_access_token,
)
from tests.support.service import Service, assert_problem, bearer
from token_vault import TokenVault
from token_vault.service.devprovider import free_port

ENDPOINTS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/users/u1/access-token", "vault:token", None),
    ("GET", "/v1/users/u1/tokens", "vault:read", None),
    ("DELETE", "/v1/users/u1/tokens", "vault:delete", None),
    ("DELETE", "/v1/tokens/some-id", "vault:delete", None),
    (
        "PUT",
        "/v1/users/u1/refresh-token",
        "vault:write",
        {"refresh_token": "rt-u1", "expires_at": "2030-01-01T00:00:00Z"},
    ),
]


@pytest.mark.parametrize(("method", "path", "scope", "body"), ENDPOINTS)
async def test_every_endpoint_refuses_missing_and_bad_credentials(
    service: Service,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    scope: str,
    body: dict[str, Any] | None,
) -> None:
    other_key = RSAKey.generate_key(2048, parameters={"kid": str(service.signing_key.kid)})
    cases = {
        "none": ({}, 401),
        "not bearer": ({"Authorization": "Basic dXNlcjpwdw=="}, 401),
        "garbage": (bearer("not-a-jwt"), 401),
        "expired": (
            bearer(service.forged_token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
            401,
        ),
        "other key": (bearer(service.forged_token(key=other_key)), 401),
        "other issuer": (bearer(service.forged_token(iss="http://evil.example/")), 401),
        "other audience": (bearer(service.forged_token(aud="another-api")), 401),
        "lacking scope": (
            bearer(
                await asyncio.to_thread(
                    service.caller_token, "vault:read" if scope != "vault:read" else "vault:token"
                )
            ),
            403,
        ),
    }
    for name, (headers, status) in cases.items():
        response = await client.request(method, path, headers=headers, json=body)
        problem = assert_problem(response, status)
        assert problem["status"] == status, name
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")


async def test_put_list_and_delete_through_the_api(
    service: Service, client: httpx.AsyncClient
) -> None:
    writer = bearer(await asyncio.to_thread(service.caller_token, "vault:write"))
    reader = bearer(await asyncio.to_thread(service.caller_token, "vault:read"))
    deleter = bearer(await asyncio.to_thread(service.caller_token, "vault:delete"))
    secret = "rt-" + secrets.token_urlsafe(32)
    body = {
        "refresh_token": secret,
        "expires_at": "2030-01-01T00:00:00Z",
        "session_state": "sid-api",
        "metadata": {"email": "api@example.test", "count": 1},
    }
    first = await client.put("/v1/users/api-user/refresh-token", json=body, headers=writer)
    assert first.status_code == 200
    second = await client.put(
        "/v1/users/api-user/refresh-token",
        json={**body, "refresh_token": secret + "-2", "metadata": {"count": 2}},
        headers=writer,
    )
    assert second.json()["id"] == first.json()["id"]
    listed = await client.get("/v1/users/api-user/tokens", headers=reader)
    assert listed.status_code == 200
    entries = listed.json()["entries"]
    assert len(entries) == 1
    assert entries[0]["metadata"]["email"] == "api@example.test"
    assert entries[0]["metadata"]["count"] == 2
    assert entries[0]["session_state"] == "sid-api"
    for response in (first, second, listed):
        assert secret not in response.text
    gone = await client.delete(f"/v1/tokens/{first.json()['id']}", headers=deleter)
    assert gone.status_code == 204
    assert_problem(await client.delete(f"/v1/tokens/{first.json()['id']}", headers=deleter), 404)
    await client.put("/v1/users/api-user/refresh-token", json=body, headers=writer)
    async with await TokenVault.open(service.database_url, service.keyring) as vault:
        await vault.store("api-user", "offline-x", expires_at=datetime.now(UTC) + timedelta(1))
    wiped = await client.delete("/v1/users/api-user/tokens", headers=deleter)
    assert wiped.json() == {"deleted": 2}
    assert (await client.get("/v1/users/api-user/tokens", headers=reader)).json()["entries"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"refresh_token": "nul\u0000inside"}, "token"),
        ({"refresh_token": ""}, "token"),
        ({"metadata": {"k": "nul\u0000"}}, "metadata"),
        ({"session_state": "x" * 300}, "session_state"),
    ],
)
async def test_bad_input_is_a_400_problem_and_stores_nothing(
    service: Service, client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    writer = bearer(await asyncio.to_thread(service.caller_token, "vault:write"))
    reader = bearer(await asyncio.to_thread(service.caller_token, "vault:read"))
    body = {"refresh_token": "rt-bad-input", "expires_at": "2030-01-01T00:00:00Z", **change}
    response = await client.put("/v1/users/bad-input/refresh-token", json=body, headers=writer)
    problem = assert_problem(response, 400)
    assert problem.get("field") == field
    assert "rt-bad-input" not in response.text
    assert (await client.get("/v1/users/bad-input/tokens", headers=reader)).json()["entries"] == []


async def test_malformed_json_and_unknown_fields_are_400(
    service: Service, client: httpx.AsyncClient
) -> None:
    writer = bearer(await asyncio.to_thread(service.caller_token, "vault:write"))
    raw = await client.put(
        "/v1/users/u/refresh-token",
        content=b"{not json",
        headers={**writer, "Content-Type": "application/json"},
    )
    assert_problem(raw, 400)
    extra = await client.put(
        "/v1/users/u/refresh-token",
        headers=writer,
        json={
            "refresh_token": "secret-value-123",
            "expires_at": "2030-01-01T00:00:00Z",
            "surprise": 1,
        },
    )
    assert_problem(extra, 400)
    assert "secret-value-123" not in extra.text


async def test_access_token_for_a_logged_in_user(
    service: Service, client: httpx.AsyncClient
) -> None:
    await asyncio.to_thread(service.log_in, "svc-alice")
    caller = bearer(await asyncio.to_thread(service.caller_token, "vault:token"))
    response = await client.post("/v1/users/svc-alice/access-token", headers=caller)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at", "refreshed"}
    async with httpx.AsyncClient() as plain:
        info = await plain.get(
            service.provider.userinfo_endpoint, headers=bearer(body["access_token"])
        )
    assert info.json()["sub"] == "svc-alice"
    async with await TokenVault.open(service.database_url, service.keyring) as vault:
        entry = await vault.get_refresh_token("svc-alice")
    assert entry is not None
    assert entry.token not in response.text
    unknown = await client.post("/v1/users/nobody/access-token", headers=caller)
    assert assert_problem(unknown, 409)["reason"] == "no_refresh_token"


async def test_operations_endpoints(service: Service, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    metrics = (await client.get("/metrics")).text
    for name in (
        "token_vault_upserts_total",
        "token_vault_refreshes_total",
        "token_vault_provider_latency_seconds",
        "token_vault_request_duration_seconds",
    ):
        assert name in metrics
    refused = await client.post("/auth/backchannel-logout", data={"logout_token": "x.y.z"})
    assert refused.status_code == 400
    openapi = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/users/{user_id}/access-token",
        "/v1/users/{user_id}/tokens",
        "/v1/tokens/{entry_id}",
        "/v1/users/{user_id}/refresh-token",
        "/readyz",
    ):
        assert path in openapi["paths"]
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/")).status_code == 200


def test_production_refuses_to_start_and_names_what_is_missing() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    result = subprocess.run(
        [sys.executable, "-m", "token_vault", "serve"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT / "tests",
    )
    assert result.returncode == 3
    for name in (
        "TOKEN_VAULT_KEYS",
        "TOKEN_VAULT_DATABASE_URL",
        "TOKEN_VAULT_OIDC_ISSUER",
        "TOKEN_VAULT_OIDC_CLIENT_ID",
        "TOKEN_VAULT_OIDC_CLIENT_SECRET",
        "TOKEN_VAULT_SESSION_SECRET",
    ):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_several_server_processes_make_one_refresh(
    service: Service, client: httpx.AsyncClient
) -> None:
    ports = [int(p) for p in service.env["EXTRA_PORTS"].split(",")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    servers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "token_vault",
            "serve",
            "--port",
            str(port),
            env={**clean, **service.env, "TOKEN_VAULT_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    try:
        urls = [service.url] + [f"http://127.0.0.1:{p}" for p in ports]
        async with httpx.AsyncClient(timeout=30.0) as http:
            for url in urls[1:]:
                for _ in range(200):
                    try:
                        if (await http.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            await asyncio.to_thread(service.log_in, "multi")
            async with await TokenVault.open(service.database_url, service.keyring) as vault:
                await expire_cached_access_token(vault, "multi")
            service.provider.reset_stats()
            caller = bearer(await asyncio.to_thread(service.caller_token, "vault:token"))
            responses = await asyncio.gather(
                *(
                    http.post(f"{urls[n % len(urls)]}/v1/users/multi/access-token", headers=caller)
                    for n in range(30)
                )
            )
        assert [r.status_code for r in responses] == [200] * 30
        assert len({r.json()["access_token"] for r in responses}) == 1
        stats = service.provider.stats()
        assert stats["token_requests"] == {"refresh_token": 1}
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        for server in servers:
            _, err = await asyncio.wait_for(server.communicate(), timeout=30)
            assert server.returncode == 0, err.decode()[-2000:]


@pytest.mark.slow
def test_dev_mode_starts_answers_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    env = {**clean, "TOKEN_VAULT_PORT": str(port), "TOKEN_VAULT_DEV_DIR": str(tmp_path / "var")}
    process = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        page = None
        for _ in range(600):
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert page is not None
        assert page.status_code == 200
        assert "Sign in" in page.text
        login_redirect = httpx.get(f"http://127.0.0.1:{port}/auth/login")
        assert "/protocol/openid-connect/auth" in login_redirect.headers["location"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=30)
    text = err.decode()
    # make itself dies of the SIGINT (as at a terminal); the service underneath shuts down.
    assert process.returncode in (0, -signal.SIGINT), text[-3000:]
    assert "Application shutdown complete" in text
    assert "warning: generated a DEV encryption key" in text
    assert "TOKEN=$(curl" in text
    assert (tmp_path / "var" / "dev-keys").exists()
    provider_port = text.split("identity provider: http://127.0.0.1:")[1].split("/")[0]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{provider_port}/", timeout=2)


CHROMIUM = Path(os.environ.get("TOKEN_VAULT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("TOKEN_VAULT_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (CI installs it and requires this test)",
)
async def test_browser_signs_in_sees_the_entry_refreshes_and_signs_out(
    service: Service, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(service.url + "/")
            await page.click("#sign-in")
            # The dev provider's login form accepts any user name.
            await page.fill("input[name=login]", "browser-user")
            password = page.locator("input[name=password]")
            if await password.count():
                await password.fill("any")
            await page.click("button[type=submit]")
            await page.wait_for_selector("#entry", timeout=20000)
            assert await page.text_content("#user") == "browser-user"
            masked = await page.text_content("td[data-field='Refresh token']")
            assert masked is not None
            assert "masked" in masked
            assert await page.text_content("td[data-field='Refresh count']") == "0"
            await page.screenshot(path=str(ARTIFACTS / "signed-in.png"), full_page=True)
            async with await TokenVault.open(service.database_url, service.keyring) as vault:
                before = await vault.get_refresh_token("browser-user")
            assert before is not None
            assert before.token not in await page.content()
            await page.click("#refresh")
            await page.wait_for_selector("#notice")
            assert await page.text_content("td[data-field='Refresh count']") == "1"
            async with await TokenVault.open(service.database_url, service.keyring) as vault:
                after = await vault.get_refresh_token("browser-user")
            assert after is not None
            assert after.token != before.token
            await page.click("#sign-out")
            await page.wait_for_load_state()
            # The provider asks to confirm ending its session; confirm if shown.
            confirm = page.locator("button[autofocus], button[type=submit]")
            if await confirm.count():
                await confirm.first.click()
                await page.wait_for_load_state()
            await page.goto(service.url + "/")
            assert await page.locator("#sign-in").count() == 1
            async with await TokenVault.open(service.database_url, service.keyring) as vault:
                assert await vault.get_refresh_token("browser-user") is None
        finally:
            await context.close()
