"""A headless browser for an OpenID provider's pages: parse forms, submit, follow.

Enough of a browser to walk a login, consent or logout page with httpx (cookies stay in
the client): used by dev mode's provider and by tests that sign in at other providers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

__all__ = ["Form", "parse_forms", "submit", "walk", "without_query"]

MAX_STEPS = 20


class Form:
    """One HTML form: where it goes, how, and its named fields."""

    def __init__(self, attrs: Mapping[str, str | None]) -> None:
        self.action = attrs.get("action") or ""
        self.method = (attrs.get("method") or "get").lower()
        self.id = attrs.get("id") or ""
        self.fields: list[tuple[str, str, str]] = []  # (name, value, type)

    def names(self) -> set[str]:
        return {name for name, _, _ in self.fields}

    def submit_value(self, name: str) -> str | None:
        """The value of the submit button called ``name``, if the form has one."""
        return next(
            (value for n, value, kind in self.fields if n == name and kind == "submit"), None
        )

    def data(self) -> dict[str, str]:
        """What a browser sends without pressing a named button."""
        return {
            name: value
            for name, value, kind in self.fields
            if kind not in ("submit", "button", "reset", "image")
        }


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "form":
            self._current = Form(attr)
            self.forms.append(self._current)
        elif tag in ("input", "button", "textarea", "select"):
            name = attr.get("name")
            if not name:
                return
            target = self._current
            owner = attr.get("form")
            if owner:
                target = next((f for f in self.forms if f.id == owner), target)
            if target is not None:
                kind = (attr.get("type") or ("submit" if tag == "button" else "text")).lower()
                target.fields.append((name, attr.get("value") or "", kind))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def submit(
    client: httpx.Client, page: httpx.Response, form: Form, data: Mapping[str, str]
) -> httpx.Response:
    """Send ``form`` from ``page`` with ``data``, without following the answer."""
    action = urljoin(str(page.url), form.action) if form.action else str(page.url)
    if form.method == "post":
        return client.post(action, data=dict(data), follow_redirects=False)
    return client.get(action, params=dict(data), follow_redirects=False)


def walk(
    client: httpx.Client,
    start: httpx.Response,
    is_done: Callable[[str], bool],
    on_page: Callable[[httpx.Response], httpx.Response | None],
    *,
    error: Callable[[str], Exception] = RuntimeError,
) -> httpx.Response:
    """Follow redirects (not the final one) and let ``on_page`` submit forms.

    Returns the redirect whose target satisfies ``is_done``, or the page for which
    ``on_page`` returns ``None``; raises ``error`` after :data:`MAX_STEPS` steps.
    """
    resp = start
    for _ in range(MAX_STEPS):
        if resp.is_redirect and "location" in resp.headers:
            location = urljoin(str(resp.url), resp.headers["location"])
            if is_done(location):
                return resp
            resp = client.get(location, follow_redirects=False)
            continue
        following = on_page(resp)
        if following is None:
            return resp
        resp = following
    raise error(f"gave up after {MAX_STEPS} steps (last: {without_query(str(resp.url))})")
