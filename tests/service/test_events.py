"""Events to the app, end to end: the service tells a real webhook receiver (which checks
every Standard Webhooks signature) of a real back-channel logout and a real refused grant;
and a receiver that is down for 30 seconds still gets every event, each idempotency key
logged once, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.cli import cli
from tests.support.oidc import CLIENT_ID, CLIENT_SECRET, serve, write_jwks
from tests.support.service import Service, bearer, service_env
from tests.support.webhooks import Receiver, receiving
from token_vault import Keyring, TokenVault, generate_key_spec
from token_vault.oidc.provider import OpenIDProvider, ProviderSettings
from token_vault.service.app import create_app
from token_vault.service.devprovider import DevProvider, free_port
from token_vault.service.devprovider import logout as provider_logout
from token_vault.service.settings import ServiceSettings
from token_vault.service.webhooks import Deliverer, DeliveryPolicy, new_secret
from token_vault.testing.pgcluster import PgCluster

LATER = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    # Every event's first arrival is answered 503: the service must retry, and the
    # receiver sees each webhook-id twice but logs it once.
    with receiving(new_secret(), refuse_first=True) as running:
        yield running


@pytest.fixture(scope="module")
def service(
    pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[Service]:
    name = f"evt_{secrets.token_hex(4)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE template_vault", database="postgres")
    database_url = pg_cluster.url_for(name)
    tmp = tmp_path_factory.mktemp("events")
    signing_key = write_jwks(tmp / "jwks.json")
    port = free_port()
    with DevProvider(
        redirect_uris=[f"http://127.0.0.1:{port}/auth/callback"],
        backchannel_logout_uri=f"http://127.0.0.1:{port}/auth/backchannel-logout",
        jwks_path=tmp / "jwks.json",
    ) as provider:
        keys = generate_key_spec()
        env = {
            **service_env(database_url, keys, provider, port),
            "TOKEN_VAULT_WEBHOOK_URL": receiver.url,
            "TOKEN_VAULT_WEBHOOK_SECRET": receiver.secret,
            "TOKEN_VAULT_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
            "TOKEN_VAULT_WEBHOOK_POLL_SECONDS": "0.2",
        }
        settings = ServiceSettings.model_validate(
            {k.removeprefix("TOKEN_VAULT_").lower(): v for k, v in env.items()}
        )
        running = Service(
            provider, f"http://127.0.0.1:{port}", database_url, keys, signing_key, env
        )
        with serve(create_app(settings), port):
            yield running


async def _arrived(receiver: Receiver, event_type: str, user_id: str) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = receiver.received(event_type, user_id)
        if found:
            assert len(found) == 1
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event_type} event for {user_id} reached the app")


async def _delivered(service: Service, event_id: str) -> dict[str, Any]:
    """The event as `token-vault events --json` shows it, once it is delivered."""
    deadline = time.monotonic() + 20
    async with await TokenVault.open(service.database_url, service.keyring) as vault:
        while time.monotonic() < deadline:
            event = await vault.event(event_id)
            if event is not None and event.state == "delivered":
                break
            await asyncio.sleep(0.05)
    listed = await asyncio.to_thread(cli, "events", "--json", env=service.env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows[event_id]["state"] == "delivered"
    row: dict[str, Any] = rows[event_id]
    return row


@pytest.mark.slow
async def test_a_backchannel_logout_reaches_the_app_signed_once(
    service: Service, receiver: Receiver
) -> None:
    browser = await asyncio.to_thread(service.log_in, "ev-hank")
    async with await TokenVault.open(service.database_url, service.keyring) as vault:
        entry = await vault.get_refresh_token("ev-hank")
        assert entry is not None
        # The provider ends the session and posts its logout token to the service.
        await asyncio.to_thread(provider_logout, browser, service.provider.end_session_endpoint)
        key, body = await _arrived(receiver, "entry.logged_out", "ev-hank")
        assert await vault.get_refresh_token("ev-hank") is None
    assert body["data"] == {
        "id": key,
        "user_id": "ev-hank",
        "entry_id": entry.id,
        "token_type": "refresh",
    }
    assert entry.token not in json.dumps(body)
    row = await _delivered(service, key)
    # Refused once (503), then acknowledged: two arrivals, one line in the app's log.
    assert [(d["attempt"], d["status"]) for d in row["deliveries"]] == [(1, 503), (2, 204)]
    _, arrivals, forged = receiver.snapshot()
    assert arrivals[key] == 2
    assert forged == 0


@pytest.mark.slow
async def test_a_refused_grant_reaches_the_app_and_replays_with_its_key(
    service: Service, receiver: Receiver
) -> None:
    await asyncio.to_thread(service.log_in, "ev-erin")
    settings = ProviderSettings(
        issuer=service.provider.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    async with await TokenVault.open(service.database_url, service.keyring) as vault:
        entry = await vault.get_refresh_token("ev-erin")
        assert entry is not None
        provider = OpenIDProvider(settings)
        try:
            assert await provider.revoke(entry.token)  # the grant dies at the provider
        finally:
            await provider.close()
        assert await vault.forget_access_token(entry.id)
    caller = bearer(await asyncio.to_thread(service.caller_token, "vault:token"))
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        refused = await client.post("/v1/users/ev-erin/access-token", headers=caller)
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == "invalid_grant"
    key, body = await _arrived(receiver, "entry.needs_reauth", "ev-erin")
    assert body["data"]["entry_id"] == entry.id
    assert entry.token not in json.dumps(body)
    await _delivered(service, key)
    # Replay: the same webhook-id arrives again; the app's log keeps it once.
    replayed = await asyncio.to_thread(cli, "events", "replay", key, env=service.env)
    assert replayed.returncode == 0, replayed.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if receiver.snapshot()[1][key] >= 3:
            break
        await asyncio.sleep(0.05)
    log, arrivals, forged = receiver.snapshot()
    assert arrivals[key] == 3
    assert [k for k, _ in log].count(key) == 1
    assert forged == 0
    missing = await asyncio.to_thread(cli, "events", "replay", "evt_none", env=service.env)
    assert missing.returncode == 1


@pytest.mark.slow
async def test_an_app_down_for_30_seconds_gets_every_event_once(
    database_url: str, keyring: Keyring
) -> None:
    """Events pile up while the app is down, survive a restart of the workers (two of
    them after it), and all arrive once it is up; each key once in the app's log."""
    secret = new_secret()
    receiver = Receiver(secret, refuse_first=True)  # not started: nothing listens yet
    policy = DeliveryPolicy(
        url=receiver.url,
        secret=secret,
        timeout=2,
        retry_base=0.5,
        retry_max=4,
        poll_interval=0.2,
        concurrency=4,
    )
    started = time.monotonic()
    first = await TokenVault.open(database_url, keyring, events=True)
    deliverer = Deliverer(first, policy)
    first.on_event(deliverer.wake)
    running = asyncio.create_task(deliverer.run())
    for n in range(12):
        await first.upsert_refresh_token(f"gone-{n}", f"refresh-gone-{n}-xyz", LATER)
    for n in range(6):
        await first.upsert_refresh_token(f"sso-{n}", f"refresh-sso-{n}-xyz", LATER, f"sid-{n}")
    await first.upsert_refresh_token("dead", "refresh-dead-xyz", LATER)
    assert await first.purge_expired_at(LATER + timedelta(days=1)) == 19
    for n in range(6):  # logged in again, then out by the provider
        await first.upsert_refresh_token(f"sso-{n}", f"refresh-sso-{n}-2-xyz", LATER, f"sid-{n}")
        assert await first.backchannel_logout(session_state=f"sid-{n}") == 1
    await first.upsert_refresh_token("dead", "refresh-dead-2-xyz", LATER)
    state = await first.refresh_state("dead")
    assert state is not None
    lease = await first.claim_refresh(state, "w", lease=timedelta(seconds=30))
    assert lease is not None
    assert await first.mark_needs_reauth(lease)
    expected = {e.id for e in await first.events(limit=1000)}
    assert len(expected) == 26

    await asyncio.sleep(12)  # the app is down: every attempt is refused
    running.cancel()  # the process stops...
    await asyncio.gather(running, return_exceptions=True)
    await deliverer.close()
    await first.close()
    failed = await TokenVault.open(database_url, keyring, events=True)  # ...and restarts
    log = await failed.deliveries(sorted(expected))
    assert len(log) >= 2 * len(expected)
    assert {d.error for d in log} == {"ConnectError"}
    assert all(e.state == "pending" for e in await failed.events(limit=1000))
    replicas = [Deliverer(failed, policy), Deliverer(failed, policy)]
    tasks = [asyncio.create_task(replica.run()) for replica in replicas]
    try:
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - started)))
        await asyncio.to_thread(receiver.start)  # the app is up after 30 s
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(e.state == "delivered" for e in await failed.events(limit=1000)):
                break
            await asyncio.sleep(0.2)
        events = await failed.events(limit=1000)
        log = await failed.deliveries(sorted(expected))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in replicas:
            await replica.close()
        await failed.close()
        receiver.stop()
    assert {e.id for e in events if e.state == "delivered"} == expected
    app_log, arrivals, forged = receiver.snapshot()
    keys = [key for key, _ in app_log]
    assert sorted(keys) == sorted(expected)  # every event, each key once in the app's log
    assert all(arrivals[key] >= 2 for key in expected)  # refused once, then sent again
    assert forged == 0
    types = sorted(body["type"] for _, body in app_log)
    assert types.count("entry.expired") == 19
    assert types.count("entry.logged_out") == 6
    assert types.count("entry.needs_reauth") == 1
    assert all("xyz" not in json.dumps(body) for _, body in app_log)
    # The delivery log: refused connections, the 503 and the acknowledgement, per event.
    for key in expected:
        statuses = [d.status for d in log if d.event_id == key]
        assert statuses[-2:] == [503, 204]
        assert None in statuses


@pytest.mark.slow
async def test_purge_expired_from_the_command_line_tells_the_app(
    database_url: str, keyring: Keyring
) -> None:
    secret = new_secret()
    env = {
        "TOKEN_VAULT_DATABASE_URL": database_url,
        "TOKEN_VAULT_KEYS": keyring.to_spec(),
        "TOKEN_VAULT_WEBHOOK_SECRET": secret,
        "TOKEN_VAULT_INSECURE_HTTP": "1",  # the receiver is plain http on loopback
    }
    async with await TokenVault.open(database_url, keyring) as vault:
        await vault.upsert_refresh_token(
            "old", "old-refresh-token-1", datetime(2020, 1, 1, tzinfo=UTC)
        )
    without_url = await asyncio.to_thread(cli, "purge-expired", env=env)
    assert without_url.returncode == 0, without_url.stderr
    assert (await asyncio.to_thread(cli, "events", "--json", env=env)).stdout == ""
    async with await TokenVault.open(database_url, keyring) as vault:
        await vault.upsert_refresh_token(
            "old", "old-refresh-token-2", datetime(2020, 1, 1, tzinfo=UTC)
        )
    with receiving(secret) as receiver:
        env["TOKEN_VAULT_WEBHOOK_URL"] = receiver.url
        purged = await asyncio.to_thread(cli, "purge-expired", env=env)
        assert purged.returncode == 0, purged.stderr
        [pending] = [
            json.loads(line)
            for line in (
                await asyncio.to_thread(cli, "events", "--json", env=env)
            ).stdout.splitlines()
        ]
        assert (pending["type"], pending["user"], pending["state"]) == (
            "entry.expired",
            "old",
            "pending",
        )
        delivered = await asyncio.to_thread(cli, "events", "deliver", "--once", env=env)
        assert delivered.returncode == 0, delivered.stderr
        assert delivered.stdout.strip() == "1 delivery attempt(s)"
        [(key, body)] = receiver.snapshot()[0]
    assert key == pending["id"]
    assert body["type"] == "entry.expired"
    listed = await asyncio.to_thread(cli, "events", "--state", "delivered", env=env)
    assert f"id={key}" in listed.stdout
    assert "old-refresh-token" not in listed.stdout + delivered.stdout + delivered.stderr
    bad = await asyncio.to_thread(cli, "events", "--state", "lost", env=env)
    assert bad.returncode == 4
