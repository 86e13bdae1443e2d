"""The web page: sign in, see your vault entry (token masked), refresh now, sign out."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from token_vault.errors import VaultError
from token_vault.oidc.routes import RelyingParty
from token_vault.service.state import ServicesDep
from token_vault.status import http_status
from token_vault.vault.audit import AuditRecord
from token_vault.vault.entry import TokenType, VaultEntry, mask

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; color: #1b1f24; }
h1 { font-size: 1.5rem; } table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #d0d7de; }
th { width: 11rem; color: #57606a; font-weight: 600; } code { font-size: .9rem; }
form { display: inline; } button, .button { font: inherit; padding: .4rem .9rem;
  border: 1px solid #1f6feb; border-radius: 6px; background: #1f6feb; color: white;
  text-decoration: none; cursor: pointer; } .secondary { background: white; color: #1f6feb; }
.note { color: #57606a; } .error { color: #cf222e; }
"""


def _page(body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>token-vault</title><meta name='viewport' content='width=device-width'>"
        f"<style>{_STYLE}</style></head><body><h1>token-vault</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def _expiry(entry: VaultEntry) -> str:
    """The refresh token's expiry as honestly as the provider told it."""
    when = entry.expires_at.isoformat(timespec="seconds")
    source = entry.metadata.get("refreshExpiry")
    if source == "none":
        return "never"
    if source == "unknown":
        return f"unknown (the provider did not say; purged after {when})"
    return when


def _entry_table(entry: VaultEntry) -> str:
    metadata = entry.metadata
    rows = [
        ("User", entry.user_id),
        ("Entry id", entry.id),
        ("Token type", entry.token_type.value),
        ("Refresh token", mask(entry.token)),
        ("Session id", entry.session_state or "none"),
        ("Expires", _expiry(entry)),
        ("Refresh count", str(metadata.get("refreshCount", 0))),
        ("Last refresh", str(metadata.get("lastRefresh", "never"))),
        ("Needs new login", "yes" if entry.needs_reauth else "no"),
    ]
    cells = "".join(
        f"<tr><th>{escape(k)}</th><td data-field='{escape(k)}'>{escape(v)}</td></tr>"
        for k, v in rows
    )
    meta = "".join(
        f"<tr><th>{escape(str(k))}</th><td><code>{escape(str(v))}</code></td></tr>"
        for k, v in sorted(metadata.items())
    )
    return f"<table id='entry'>{cells}</table><h2>Metadata</h2><table id='metadata'>{meta}</table>"


@router.get("/")
async def home(request: Request, services: ServicesDep) -> Response:
    user = RelyingParty.current_user(request)
    if user is None:
        return _page(
            "<p>Keeps your users' OpenID Connect refresh tokens encrypted, one per user, "
            "and hands other services fresh access tokens.</p>"
            "<p><a class='button' id='sign-in' href='/auth/login'>Sign in</a></p>"
        )
    entry = await services.vault.retrieve(user.entry_id)
    if entry is None:
        request.session.clear()
        return RedirectResponse("/", status_code=303)
    notice = request.query_params.get("notice", "")
    offline = [
        e
        for e in await services.vault.list_tokens(user.user_id, TokenType.OFFLINE)
        if e.client_id is not None
    ]
    token = RelyingParty.csrf_token(request)
    csrf = f"<input type='hidden' name='csrf' value='{escape(token)}'>"
    return _page(
        f"<p>Signed in as <strong id='user'>{escape(_display_name(entry))}</strong>"
        + (
            f" <span class='note'>({escape(user.user_id)})</span>"
            if _display_name(entry) != user.user_id
            else ""
        )
        + ".</p>"
        + (f"<p class='note' id='notice'>{escape(notice)}</p>" if notice else "")
        + _entry_table(entry)
        + f"<p><form method='post' action='/refresh'>{csrf}"
        "<button id='refresh'>Refresh now</button></form> "
        f"<form method='post' action='/auth/logout'>{csrf}"
        "<button class='secondary' id='sign-out'>Sign out</button></form></p>"
        + _offline_section(offline, csrf)
        + _handouts_section(
            await services.vault.audit_trail(user_id=user.user_id, action="token", limit=20)
        )
    )


def _handouts_section(records: list[AuditRecord]) -> str:
    """Who used your token: the last handouts to other services, from the audit trail."""
    if not records:
        body = "<p class='note' id='no-handouts'>No service has taken your token yet.</p>"
    else:
        rows = "".join(
            f"<tr><td>{escape(r.at.isoformat(timespec='seconds'))}</td>"
            f"<td><code>{escape(r.caller or 'unknown')}</code></td>"
            f"<td>{escape(r.outcome)}</td></tr>"
            for r in records
        )
        body = (
            f"<table id='handouts'><tr><th>When</th><th>Service</th><th>How</th></tr>{rows}</table>"
        )
    return f"<h2>Who used your token</h2>{body}"


def _display_name(entry: VaultEntry) -> str:
    """Who is signed in, as people read it: the name, else the user name, else ``sub``."""
    for key in ("name", "username"):
        value = entry.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return entry.user_id


def _offline_section(entries: list[VaultEntry], csrf: str) -> str:
    if not entries:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(e.id)}</code></td>"
        f"<td>{escape(e.created_at.isoformat(timespec='seconds'))}</td>"
        f"<td>{escape(e.expires_at.isoformat(timespec='seconds'))}</td></tr>"
        for e in entries
    )
    return (
        "<h2>Offline access</h2><p class='note'>These tokens outlive sign-out, so "
        "services can act for you while you are away.</p>"
        "<table id='offline'><tr><th>Entry</th><th>Granted</th><th>Expires</th></tr>"
        f"{rows}</table><p><form method='post' action='/auth/offline/revoke'>{csrf}"
        "<button id='revoke-offline' class='secondary'>Revoke offline access</button>"
        "</form></p>"
    )


@router.post("/refresh")
async def refresh_now(request: Request, services: ServicesDep) -> Response:
    user = RelyingParty.current_user(request)
    if user is None:
        return RedirectResponse("/", status_code=303)
    if not await services.relying_party.is_same_origin_post(request):
        return _page("<p class='error'>Refused: not from this site.</p>", status=403)
    try:
        await services.access_tokens.refresh_now(user.user_id)
        await services.vault.record_audit("refresh_forced", "ok", user_id=user.user_id)
    except VaultError as exc:
        return _page(
            f"<p class='error'>Refresh failed: {escape(type(exc).__name__)}</p>"
            "<p><a href='/'>Back</a></p>",
            status=http_status(exc).code,
        )
    return RedirectResponse("/?notice=Refreshed", status_code=303)
