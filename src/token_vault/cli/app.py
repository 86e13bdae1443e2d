"""``token-vault``: the command line. Errors map to exit codes here, and only here.

Exit codes: 0 success; 1 a check found a problem; 2 usage error; 3 configuration or key
problem, a missing extra, or dev mode's provider could not start; 4 invalid input; 5 a
token did not decrypt; 6 database unavailable; 7 migration refused.

Commands whose output scripts read take ``--json``: one JSON object on stdout, the same
exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from token_vault import __version__
from token_vault.config import KEK_PROVIDERS, VaultSettings
from token_vault.crypto.keyring import Key, Keyring
from token_vault.crypto.wrapping import is_wrapped_spec, rewrap_spec, wrap_keyring
from token_vault.errors import (
    ConfigurationError,
    DecryptionError,
    KeyringError,
    MigrationError,
    UnavailableError,
    ValidationError,
    VaultError,
)
from token_vault.extra import require
from token_vault.service.process import ProviderProcessError
from token_vault.vault import schema

__all__ = ["EXIT_CODES", "app", "main"]

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object on stdout")]

EXIT_CODES: dict[type[VaultError], int] = {
    ConfigurationError: 3,
    ValidationError: 4,
    DecryptionError: 5,
    UnavailableError: 6,
    MigrationError: 7,
}

app = typer.Typer(
    help="token-vault: encrypted refresh and offline tokens for OpenID Connect apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Schema migrations and consistency checks.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
events_app = typer.Typer(
    help="Events to the app (webhooks): list them with their delivery state, deliver, replay."
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")


def exit_code_for(error: VaultError) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    return 1


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Turn a vault error into a message on stderr and its exit code."""
    try:
        yield
    except VaultError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(exit_code_for(error)) from None


def fail(message: object, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def echo_json(value: object) -> None:
    typer.echo(json.dumps(value, sort_keys=True))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning vault errors into a message and an exit code."""
    with failing_cleanly():
        return asyncio.run(coroutine)


def _settings() -> VaultSettings:
    return VaultSettings()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"token-vault {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """token-vault: encrypted refresh and offline tokens for OpenID Connect apps."""


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    url = _settings().database()
    asyncio.run(schema.upgrade(url, revision))
    typer.echo(f"{url.redacted()}: at revision {asyncio.run(schema.current_revision(url))}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="target revision, e.g. 0001 or base")],
) -> None:
    """Revert migrations down to REVISION (`base` removes everything)."""
    url = _settings().database()
    asyncio.run(schema.downgrade(url, revision))
    current = asyncio.run(schema.current_revision(url))
    typer.echo(f"{url.redacted()}: at revision {current or 'base'}")


@db_app.command("current")
def db_current(as_json: JsonOption = False) -> None:
    """Print the database's revision and the newest one this version knows."""
    url = _settings().database()
    current = asyncio.run(schema.current_revision(url))
    head = schema.head_revision()
    if as_json:
        echo_json({"current": current, "head": head, "up_to_date": current == head})
        return
    typer.echo(f"current: {current or 'base'}")
    typer.echo(f"head:    {head}")


@db_app.command("dedupe")
def db_dedupe(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list, delete nothing")] = False,
) -> None:
    """Keep each user's newest refresh token and delete the others (offline tokens stay)."""
    removed = asyncio.run(schema.dedupe(_settings().database(), dry_run=dry_run))
    verb = "would remove" if dry_run else "removed"
    for entry in removed:
        typer.echo(f"{verb} refresh entry {entry.id} of user {entry.user_id}")
    users = len({e.user_id for e in removed})
    typer.echo(f"{verb} {len(removed)} duplicate refresh token(s) of {users} user(s)")


@db_app.command("check")
def db_check(as_json: JsonOption = False) -> None:
    """Fail (exit 1) if any user holds more than one refresh token."""
    duplicates = asyncio.run(schema.check_duplicates(_settings().database()))
    if as_json:
        users = [{"user_id": user_id, "refresh_tokens": n} for user_id, n in duplicates]
        echo_json({"ok": not duplicates, "users_with_duplicates": users})
        raise typer.Exit(1 if duplicates else 0)
    for user_id, count in duplicates:
        typer.echo(f"user {user_id} holds {count} refresh tokens")
    if duplicates:
        typer.echo(f"{len(duplicates)} user(s) with duplicates; run `token-vault db dedupe`")
        raise typer.Exit(1)
    typer.echo("ok: no user holds more than one refresh token")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new key as TOKEN_VAULT_KEYS=... (only `keys` commands print keys).

    With TOKEN_VAULT_KEK_PROVIDER set, the key is printed wrapped by that KEK.
    """
    with failing_cleanly():
        spec = _settings().key_spec_for(Keyring([key := Key.generate()], primary=key.key_id))
    typer.echo(f"TOKEN_VAULT_KEYS={spec}")


@keys_app.command("add")
def keys_add() -> None:
    """Print TOKEN_VAULT_KEYS=... with a new primary key added to the configured ones.

    Give the printed value to every instance, then run `token-vault keys rotate`.
    """
    with failing_cleanly():
        settings = _settings()
        spec = settings.key_spec_for(settings.keyring().with_primary(Key.generate()))
    typer.echo(f"TOKEN_VAULT_KEYS={spec}")


@keys_app.command("wrap")
def keys_wrap() -> None:
    """Print TOKEN_VAULT_KEYS=... with today's plain keys wrapped by the KEK.

    Set TOKEN_VAULT_KEK_PROVIDER and that provider's settings beside the plain
    TOKEN_VAULT_KEYS, run this, and configure every instance with the printed value: the
    data keys (and so every stored row) stay the same, and the configuration holds no key.
    """
    with failing_cleanly():
        settings = _settings()
        spec = settings.key_spec()
        if is_wrapped_spec(spec):
            raise KeyringError(
                "TOKEN_VAULT_KEYS is wrapped already; `token-vault keys rewrap --kek NEW` "
                "wraps it under another KEK"
            )
        wrapper = settings.key_wrapper()
        if wrapper is None:
            raise ConfigurationError(
                "no key-encryption key: set TOKEN_VAULT_KEK_PROVIDER (aws-kms or pkcs11) and "
                "that provider's settings, then run this again"
            )
        wrapped = wrap_keyring(Keyring.from_spec(spec), wrapper)
    typer.echo(f"TOKEN_VAULT_KEYS={wrapped}")


@keys_app.command("rewrap")
def keys_rewrap(
    kek: Annotated[
        str,
        typer.Option(help="the new KEK: a KMS key id, ARN or alias, or a PKCS#11 key label"),
    ],
    provider: Annotated[
        str | None,
        typer.Option(help="the new KEK's provider, aws-kms or pkcs11 (default: the current)"),
    ] = None,
) -> None:
    """Print TOKEN_VAULT_KEYS=... re-wrapped under a new KEK, and the setting naming it.

    The data keys do not change: no row is re-encrypted, and running instances go on with
    the keys they hold. Configure every instance with the printed lines; disable the old
    KEK once all of them have restarted.
    """
    with failing_cleanly():
        settings = _settings()
        current = settings.key_wrapper()
        if current is None:
            raise ConfigurationError(
                "no key-encryption key is configured, so nothing to re-wrap: "
                "`token-vault keys wrap` wraps plain keys"
            )
        new_provider = provider or settings.kek_provider or ""
        new = settings.key_wrapper(provider=new_provider, kek=kek)
        assert new is not None  # a provider was given
        spec = rewrap_spec(settings.key_spec(), current, new)
    typer.echo(f"TOKEN_VAULT_KEYS={spec}")
    if new_provider != settings.kek_provider:
        typer.echo(f"TOKEN_VAULT_KEK_PROVIDER={new_provider}")
    typer.echo(f"TOKEN_VAULT_{KEK_PROVIDERS[new_provider].upper()}={kek}")


@keys_app.command("status")
def keys_status(as_json: JsonOption = False) -> None:
    """How many stored ciphertexts each key seals (key ids only, never key material)."""

    async def count() -> tuple[dict[str, int], str, frozenset[str]]:
        async with await _settings().open_vault() as vault:
            return await vault.keys_in_use(), vault.keyring.primary, vault.keyring.key_ids

    used, primary, configured = run(count())
    with failing_cleanly():
        wrapper = _settings().key_wrapper()
    if as_json:
        keys = [
            {
                "id": key_id,
                "primary": key_id == primary,
                "configured": key_id in configured,
                "ciphertexts": used.get(key_id, 0),
            }
            for key_id in sorted(configured | set(used))
        ]
        echo_json({"primary": primary, "keys": keys, "kek": wrapper.kek_id if wrapper else None})
        return
    if wrapper is not None:
        typer.echo(f"data keys wrapped by {wrapper.kek_id}")
    for key_id in sorted(configured | set(used)):
        marks = " (primary)" if key_id == primary else ""
        marks += "" if key_id in configured else " (NOT CONFIGURED)"
        typer.echo(f"{key_id}{marks}: {used.get(key_id, 0)} ciphertext(s)")


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="rows per batch")] = 500,
) -> None:
    """Re-seal every row with the primary key, in batches; safe to stop and run again."""

    async def rotate() -> tuple[int, int, dict[str, int], str]:
        async with await _settings().open_vault() as vault:
            used = await vault.keys_in_use()
            primary = vault.keyring.primary
            todo = sum(n for key_id, n in used.items() if key_id != primary)
            with typer.progressbar(length=todo, label="re-sealing", file=sys.stderr) as bar:
                report = await vault.rotate_keys(batch_size=batch_size, progress=bar.update)
            await vault.record_audit("key_rotation", f"ok:{report.resealed}")
            return report.resealed, report.skipped_concurrent, await vault.keys_in_use(), primary

    resealed, skipped, used, primary = asyncio.run(rotate())
    typer.echo(f"re-sealed {resealed} row(s) with {primary}; {skipped} changed meanwhile")
    left = {k: n for k, n in used.items() if k != primary}
    if left:
        typer.echo(f"still on other keys (leased or rewritten meanwhile; run again): {left}")
        raise typer.Exit(1)
    typer.echo("every ciphertext is sealed with the primary key")


@keys_app.command("remove")
def keys_remove(key_id: Annotated[str, typer.Argument(help="the key id to drop")]) -> None:
    """Print TOKEN_VAULT_KEYS=... without KEY_ID; refuses while any row still uses it."""

    settings = _settings()

    async def check() -> tuple[int, Keyring]:
        async with await settings.open_vault() as vault:
            remaining = vault.keyring.without(key_id)
            return (await vault.keys_in_use()).get(key_id, 0), remaining

    in_use, remaining = run(check())
    if in_use:
        typer.echo(
            f"error: {in_use} ciphertext(s) still use key {key_id}; "
            "run `token-vault keys rotate` first",
            err=True,
        )
        raise typer.Exit(1)
    with failing_cleanly():
        spec = settings.key_spec_for(remaining)
    typer.echo(f"TOKEN_VAULT_KEYS={spec}")


@app.command("purge-expired")
def purge_expired() -> None:
    """Delete every entry whose expiry has passed."""

    from token_vault.service.settings import ServiceSettings

    settings = ServiceSettings()

    async def purge() -> int:
        # With a webhook configured, each purged entry leaves an entry.expired event.
        async with await settings.open_vault(events=settings.events_enabled) as vault:
            return await vault.purge_expired()

    typer.echo(f"purged {asyncio.run(purge())} expired entr(y/ies)")


@app.command("serve")
def serve(
    dev: Annotated[
        bool, typer.Option("--dev", help="dev mode: local key, SQLite, dev provider")
    ] = False,
    host: Annotated[
        str | None,
        typer.Option(help="interface (TOKEN_VAULT_HOST, else 127.0.0.1; --dev: 127.0.0.1)"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port (default TOKEN_VAULT_PORT, else 8000)")
    ] = None,
    keep_alive: Annotated[
        bool, typer.Option("--refresher", help="also run the keep-alive refresher")
    ] = False,
) -> None:
    """Serve the web page and the API (production settings unless --dev)."""
    require("service", "token-vault serve")
    if dev:
        from pathlib import Path

        from token_vault.service.dev import run_dev

        run_dev(
            host=host or "127.0.0.1",
            port=port or int(os.environ.get("TOKEN_VAULT_PORT", "8000")),
            var=Path(os.environ.get("TOKEN_VAULT_DEV_DIR", "var")),
        )
        return
    import uvicorn

    from token_vault.service.app import create_app
    from token_vault.service.logs import configure_logging
    from token_vault.service.settings import ServiceSettings

    settings = ServiceSettings()
    settings = settings.model_copy(  # the redirect URI follows --host/--port
        update={
            "host": host or settings.host,
            "port": port or settings.port,
            "refresher": keep_alive or settings.refresher,
        }
    )
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
    )


@app.command("stats")
def stats(as_json: JsonOption = False) -> None:
    """Entries by type: how many, how many expired, how many need a new login."""

    async def count() -> list[tuple[str, int, int, int]]:
        async with await _settings().open_vault() as vault:
            return await vault.stats()

    rows = asyncio.run(count())
    if as_json:
        types = {
            token_type: {"entries": entries, "expired": expired, "needs_reauth": reauth}
            for token_type, entries, expired, reauth in rows
        }
        echo_json({"types": types})
        return
    typer.echo(f"{'type':<10}{'entries':>10}{'expired':>10}{'re-login':>10}")
    for token_type, entries, expired, reauth in rows:
        typer.echo(f"{token_type:<10}{entries:>10}{expired:>10}{reauth:>10}")
    if not rows:
        typer.echo("(no entries)")


@app.command("audit")
def audit(
    user: Annotated[str | None, typer.Option(help="only this user's records")] = None,
    caller: Annotated[str | None, typer.Option(help="only this caller's records")] = None,
    since: Annotated[
        str | None, typer.Option(help="only from this time on (ISO 8601, e.g. 2030-01-31)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The audit trail, newest first: who took whose token, refreshes, writes, sign-ins."""
    import json
    from datetime import UTC, datetime

    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            typer.echo("error: --since must be an ISO 8601 time", err=True)
            raise typer.Exit(4) from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)

    async def read() -> list[Any]:
        async with await _settings().open_vault() as vault:
            return await vault.audit_trail(user_id=user, caller=caller, since=start, limit=limit)

    for record in run(read()):
        fields = {
            "at": record.at.isoformat(),
            "action": record.action,
            "outcome": record.outcome,
            "caller": record.caller,
            "user": record.user_id,
            "entry": record.entry_id,
            "request": record.request_id,
            "client": record.client_address,
        }
        if as_json:
            typer.echo(json.dumps(fields))
        else:
            typer.echo("  ".join(f"{k}={v}" for k, v in fields.items() if v is not None))


@app.command("purge-audit")
def purge_audit(
    older_than_days: Annotated[int, typer.Option(min=1, help="keep this many days")] = 365,
) -> None:
    """Delete audit records older than the retention period."""
    from datetime import timedelta

    async def purge() -> int:
        async with await _settings().open_vault() as vault:
            return await vault.purge_audit(timedelta(days=older_than_days))

    typer.echo(f"purged {run(purge())} audit record(s) older than {older_than_days} days")


@app.command("refresher")
def refresher_command(
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
) -> None:
    """Keep entries alive: refresh those whose refresh token would lapse soon.

    Safe with any number of replicas (the same lease as every refresh). Window, pace and
    concurrency come from the TOKEN_VAULT_REFRESHER_* settings.
    """
    from collections import Counter
    from datetime import timedelta

    require("service", "token-vault refresher")
    from token_vault.oidc.access import AccessTokens
    from token_vault.oidc.provider import OpenIDProvider
    from token_vault.service.app import refresher
    from token_vault.service.settings import ServiceSettings

    settings = ServiceSettings()

    def show(outcomes: Counter[str], total: int) -> None:
        done = sum(outcomes.values())
        summary = ", ".join(f"{outcomes[k]} {k}" for k in sorted(outcomes))
        sys.stderr.write(f"\rkeep-alive: {done}/{total} entries; {summary}   ")
        sys.stderr.flush()

    async def keep() -> Counter[str]:
        async with await settings.open_vault() as vault:
            provider = OpenIDProvider(settings.provider())
            try:
                access = AccessTokens(
                    vault, provider, lease=timedelta(seconds=settings.refresh_lease_seconds)
                )
                keeper = refresher(vault, access, settings, None)
                if once:
                    return await keeper.run_once(show)
                every = timedelta(seconds=settings.refresher_interval_seconds)
                await keeper.run(every=every, progress=show)
                return Counter()
            finally:
                await provider.close()

    outcomes = asyncio.run(keep())
    sys.stderr.write("\n")
    typer.echo(" ".join(f"{k}={outcomes[k]}" for k in sorted(outcomes)) or "nothing to do")
    if outcomes["failed"]:
        raise typer.Exit(1)


@app.command("doctor")
def doctor(as_json: JsonOption = False) -> None:
    """Check the configuration end to end; exit 1 if any check fails."""
    require("oidc", "token-vault doctor")
    from token_vault.cli.doctor import run_checks
    from token_vault.service.settings import ServiceSettings

    checks = asyncio.run(run_checks(ServiceSettings()))
    failed = [c for c in checks if not c.ok]
    if as_json:
        echo_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        for check in checks:
            typer.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
            if not check.ok and check.hint:
                typer.echo(f"     fix: {check.hint}")
        typer.echo("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    if failed:
        raise typer.Exit(1)


@app.command("demo")
def demo() -> None:
    """A short walk-through of the library against the configured database."""
    from token_vault.cli.demo import walkthrough

    asyncio.run(walkthrough(typer.echo))


@events_app.callback(invoke_without_command=True)
def events_list(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="only events in this state: pending, delivered, failed")
    ] = None,
    user: Annotated[str | None, typer.Option(help="only this user's events")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per line, with its delivery log")
    ] = False,
) -> None:
    """Events, newest first, with their delivery state (and log, with --json)."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    async def read() -> tuple[list[Any], list[Any]]:
        async with await _settings().open_vault() as vault:
            events = await vault.events(state=state, user_id=user, limit=limit)
            log = await vault.deliveries([e.id for e in events]) if as_json else []
            return events, log

    events, log = run(read())
    for event in events:
        fields: dict[str, Any] = {
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at.isoformat(),
            "user": event.user_id,
            "entry": event.entry_id,
            "token_type": event.token_type,
            "state": event.state,
            "attempts": event.attempts,
            "next_attempt_at": (
                event.next_attempt_at.isoformat() if event.state == "pending" else None
            ),
            "delivered_at": event.delivered_at.isoformat() if event.delivered_at else None,
            "last_status": event.last_status,
            "last_error": event.last_error,
        }
        if as_json:
            fields["deliveries"] = [
                {
                    "attempt": d.attempt,
                    "at": d.at.isoformat(),
                    "status": d.status,
                    "error": d.error,
                    "duration_ms": d.duration_ms,
                    "worker": d.worker,
                }
                for d in log
                if d.event_id == event.id
            ]
            typer.echo(json.dumps(fields))
        else:
            typer.echo("  ".join(f"{k}={v}" for k, v in fields.items() if v is not None))
    if not events and not as_json:
        typer.echo("(no events)")


@events_app.command("replay")
def events_replay(event_id: Annotated[str, typer.Argument(help="the event's id")]) -> None:
    """Queue an event again (same id, so the app can tell it has seen it), due now."""

    async def replay() -> bool:
        async with await _settings().open_vault() as vault:
            return await vault.replay_event(event_id)

    if not run(replay()):
        typer.echo(f"error: no event {event_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"queued {event_id} for delivery")


@events_app.command("deliver")
def events_deliver(
    once: Annotated[bool, typer.Option("--once", help="deliver what is due, then exit")] = False,
) -> None:
    """Deliver events to TOKEN_VAULT_WEBHOOK_URL (beside or instead of `serve`'s worker;
    any number may run)."""
    from token_vault.service.settings import ServiceSettings
    from token_vault.service.webhooks import Deliverer

    settings = ServiceSettings()

    async def deliver() -> int:
        policy = settings.delivery_policy()
        async with await settings.open_vault(events=True) as vault:
            deliverer = Deliverer(vault, policy)
            try:
                if once:
                    return await deliverer.deliver_due()
                await deliverer.run()
                return 0
            finally:
                await deliverer.close()

    typer.echo(f"{run(deliver())} delivery attempt(s)")


@events_app.command("secret")
def events_secret() -> None:
    """Print a new webhook signing secret as TOKEN_VAULT_WEBHOOK_SECRET=whsec_..."""
    from token_vault.service.webhooks import new_secret

    typer.echo(f"TOKEN_VAULT_WEBHOOK_SECRET={new_secret()}")


@events_app.command("purge")
def events_purge(
    older_than_days: Annotated[int, typer.Option(min=1, help="keep this many days")] = 30,
) -> None:
    """Delete delivered events (and their delivery logs) older than the retention period."""
    from datetime import timedelta

    async def purge() -> int:
        async with await _settings().open_vault() as vault:
            return await vault.purge_events(timedelta(days=older_than_days))

    typer.echo(f"purged {run(purge())} delivered event(s) older than {older_than_days} days")


def main() -> None:
    """The ``token-vault`` command: errors become a message and an exit code, here only."""
    # Authlib 1.9 announces a future move of its httpx integration; nothing to act on here.
    # Its warnings module turns its own warnings to "always" when imported, so it is
    # imported first (when the oidc extra is there) and this filter goes in front of that.
    with contextlib.suppress(ImportError):
        import authlib.deprecate  # noqa: F401
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except VaultError as error:
        fail(error, exit_code_for(error))
    except ProviderProcessError as error:  # dev mode's provider: no Node, or it did not start
        fail(error, 3)
