"""The outbox on PostgreSQL and SQLite: events written with the change they describe,
claimed by one worker at a time, delivered, retried, replayed. Never a token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from token_vault import ConfigurationError, Keyring, TokenVault
from token_vault.service.webhooks import DeliveryPolicy, check_secret, new_secret
from token_vault.vault.events import DeliveryOutcome, EventRow, event_body
from token_vault.vault.refresh import RefreshLease

LATER = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
async def events_vault(database_url: str, keyring: Keyring) -> AsyncIterator[TokenVault]:
    opened = await TokenVault.open(database_url, keyring, events=True)
    yield opened
    await opened.close()


async def _lease(vault: TokenVault, user_id: str) -> RefreshLease:
    state = await vault.refresh_state(user_id)
    assert state is not None
    lease = await vault.claim_refresh(state, "worker-1", lease=timedelta(seconds=30))
    assert lease is not None
    return lease


async def test_a_refused_grant_leaves_one_event_with_the_flag(events_vault: TokenVault) -> None:
    entry_id = await events_vault.upsert_refresh_token("ann", "ann-refresh-token-1", LATER)
    woken: list[int] = []
    events_vault.on_event(lambda: woken.append(1))
    assert await events_vault.mark_needs_reauth(await _lease(events_vault, "ann"))
    [event] = await events_vault.events()
    assert (event.type, event.user_id, event.entry_id, event.token_type) == (
        "entry.needs_reauth",
        "ann",
        entry_id,
        "refresh",
    )
    assert (event.state, event.attempts) == ("pending", 0)
    assert event.id.startswith("evt_")
    assert woken == [1]
    body = json.dumps(event_body(event))
    assert "ann-refresh-token-1" not in body
    assert json.loads(body)["data"] == {
        "id": event.id,
        "user_id": "ann",
        "entry_id": entry_id,
        "token_type": "refresh",
    }


async def test_a_mark_that_does_not_apply_leaves_no_event(events_vault: TokenVault) -> None:
    await events_vault.upsert_refresh_token("bob", "bob-refresh-token-1", LATER)
    lease = await _lease(events_vault, "bob")
    await events_vault.upsert_refresh_token("bob", "bob-refresh-token-2", LATER)  # a new login
    assert not await events_vault.mark_needs_reauth(lease)
    assert await events_vault.events() == []


async def test_backchannel_logout_and_purge_leave_one_event_per_entry(
    events_vault: TokenVault,
) -> None:
    await events_vault.upsert_refresh_token("cat", "cat-refresh-1", LATER, session_state="s-1")
    await events_vault.store("cat", "cat-offline-1", expires_at=LATER, session_state="s-1")
    await events_vault.upsert_refresh_token("dan", "dan-refresh-1", LATER)
    await events_vault.upsert_refresh_token("eve", "eve-refresh-1", LATER - timedelta(days=60))
    assert await events_vault.backchannel_logout(session_state="s-1", token_type="refresh") == 1
    assert await events_vault.backchannel_logout(user_id="dan") == 1
    assert await events_vault.backchannel_logout(user_id="nobody") == 0
    assert await events_vault.purge_expired() == 1
    seen = sorted((e.type, e.user_id, e.token_type) for e in await events_vault.events())
    assert seen == [
        ("entry.expired", "eve", "refresh"),
        ("entry.logged_out", "cat", "refresh"),
        ("entry.logged_out", "dan", "refresh"),
    ]
    assert [e.token_type for e in await events_vault.list_tokens("cat")] == ["offline"]


async def test_without_events_the_same_changes_leave_none(vault: TokenVault) -> None:
    assert not vault.events_enabled
    await vault.upsert_refresh_token("fay", "fay-refresh-1", LATER, session_state="s-2")
    await vault.upsert_refresh_token("gus", "gus-refresh-1", LATER)
    assert await vault.mark_needs_reauth(await _lease(vault, "gus"))
    assert await vault.backchannel_logout(session_state="s-2") == 1
    assert await vault.purge_expired_at(LATER + timedelta(days=1)) == 1
    assert await vault.events() == []


def _outcome(event: EventRow, worker: str, state: str, status: int | None) -> DeliveryOutcome:
    return DeliveryOutcome(
        event_id=event.id,
        worker=worker,
        attempt=event.attempts + 1,
        at=datetime.now(UTC),
        status=status,
        error=None if status == 204 else "ConnectError",
        duration_ms=3,
        state=state,
        retry_in=timedelta(seconds=60) if state == "pending" else timedelta(0),
    )


async def test_claims_retries_replays_and_the_delivery_log(events_vault: TokenVault) -> None:
    for n in range(5):
        await events_vault.upsert_refresh_token(f"u{n}", f"token-{n}-abcdefgh", LATER)
    assert await events_vault.purge_expired_at(LATER + timedelta(days=1)) == 5
    lease = timedelta(seconds=30)
    first = await events_vault.claim_events("w1", lease=lease, limit=3)
    second = await events_vault.claim_events("w2", lease=lease, limit=10)
    assert len(first) == 3
    assert len(second) == 2
    assert not {e.id for e in first} & {e.id for e in second}
    assert await events_vault.claim_events("w3", lease=lease) == []  # all leased
    # w1 delivers one, fails one (retry in a minute), and gives one up.
    assert await events_vault.record_delivery(_outcome(first[0], "w1", "delivered", 204))
    assert await events_vault.record_delivery(_outcome(first[1], "w1", "pending", None))
    assert await events_vault.record_delivery(_outcome(first[2], "w1", "failed", 503))
    # A worker whose lease is not the event's: the attempt is logged, the state kept.
    assert not await events_vault.record_delivery(_outcome(second[0], "w9", "delivered", 204))
    assert await events_vault.claim_events("w3", lease=lease) == []  # the retry is not due
    states = {e.id: e for e in await events_vault.events()}
    assert states[first[0].id].state == "delivered"
    assert states[first[0].id].delivered_at is not None
    assert (states[first[1].id].state, states[first[1].id].attempts) == ("pending", 1)
    assert states[first[1].id].last_error == "ConnectError"
    assert (states[first[2].id].state, states[first[2].id].last_status) == ("failed", 503)
    assert states[second[0].id].state == "pending"
    log = await events_vault.deliveries([first[0].id, second[0].id])
    assert [(d.event_id, d.attempt, d.status, d.worker) for d in log] == [
        (first[0].id, 1, 204, "w1"),
        (second[0].id, 1, 204, "w9"),
    ]
    # Replay: due now, fresh attempts, the same id (the app's idempotency key).
    assert await events_vault.replay_event(first[2].id)
    assert not await events_vault.replay_event("evt_nosuchevent")
    [again] = await events_vault.claim_events("w3", lease=lease)
    assert (again.id, again.attempts, again.state) == (first[2].id, 0, "pending")
    assert await events_vault.events(state="failed") == []
    assert [e.id for e in await events_vault.events(state="delivered")] == [first[0].id]
    # Retention: delivered events older than the period go, with their log.
    assert await events_vault.purge_events(timedelta(days=-1)) == 1
    assert await events_vault.deliveries([first[0].id]) == []


async def test_a_lapsed_lease_lets_another_worker_take_the_event(
    database_url: str, keyring: Keyring
) -> None:
    async with await TokenVault.open(database_url, keyring, events=True) as vault:
        await vault.upsert_refresh_token("hal", "hal-refresh-1", LATER)
        await vault.purge_expired_at(LATER + timedelta(days=1))
        [taken] = await vault.claim_events("w1", lease=timedelta(milliseconds=200))
        assert await vault.claim_events("w2", lease=timedelta(seconds=30)) == []
        await asyncio.sleep(0.4)  # w1 died: its lease lapses
        [retaken] = await vault.claim_events("w2", lease=timedelta(seconds=30))
        assert retaken.id == taken.id


async def test_concurrent_claims_never_share_an_event(database_url: str, keyring: Keyring) -> None:
    async with await TokenVault.open(database_url, keyring, events=True, pool_size=8) as vault:
        for n in range(40):
            await vault.upsert_refresh_token(f"c{n}", f"token-c{n}-abcdefgh", LATER)
        await vault.purge_expired_at(LATER + timedelta(days=1))
        claims = await asyncio.gather(
            *(vault.claim_events(f"w{n}", lease=timedelta(seconds=30), limit=3) for n in range(16))
        )
    ids = [event.id for claim in claims for event in claim]
    assert len(ids) == len(set(ids)) == 40


def test_secrets_are_checked_and_backoff_grows_to_its_cap() -> None:
    check_secret(new_secret())
    for bad in ("", "not-whsec", "whsec_!!!", "whsec_c2hvcnQ="):
        with pytest.raises(ConfigurationError, match=r"whsec_|base64|bytes"):
            check_secret(bad)
    policy = DeliveryPolicy(url="http://x", secret=new_secret(), retry_base=1, retry_max=10)
    waits = [policy.retry_in(n).total_seconds() for n in range(1, 8)]
    assert 0.8 <= waits[0] <= 1
    assert 1.6 <= waits[1] <= 2
    assert 6.4 <= waits[3] <= 8
    assert all(8 <= w <= 10 for w in waits[4:])
