"""Who may take whose token: the caller policy, closed by default.

A caller is named by the client id in its access token (``client_id``, else ``azp``). The
policy gives each caller the actions it may take and the users it may take them for; a
caller not in the policy gets 403 whatever its scopes (the scope is still required too).

Format (JSON, in ``TOKEN_VAULT_CALLER_POLICY`` or the file ``TOKEN_VAULT_CALLER_POLICY_FILE``)::

    {"callers": {
        "billing-service": {"actions": ["token", "read"], "users": "*"},
        "reports":         {"actions": ["read"], "users": {"pattern": "^acme[|]"}},
        "mailer":          {"actions": ["token"], "users": "consented"}
    }}

``users``: ``"*"`` (all users), ``{"pattern": REGEX}`` (user ids matching it, whole
match), or ``"consented"`` (users whose entry lists the caller in its ``consent``
metadata, which only the app itself can write). Actions: ``token``, ``read``,
``write``, ``delete``, ``audit``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from token_vault.errors import ConfigurationError

__all__ = ["ACTIONS", "CallerPolicy", "CallerRule", "Decision", "UserScope"]

ACTIONS = frozenset({"token", "read", "write", "delete", "audit"})
CONSENT_KEY = "consent"


class UserScope(StrEnum):
    ALL = "all"
    PATTERN = "pattern"
    CONSENTED = "consented"


@dataclass(frozen=True, slots=True)
class CallerRule:
    actions: frozenset[str]
    users: UserScope
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a caller may act, and why (for the audit trail, logs and tests)."""

    allowed: bool
    reason: str


class CallerPolicy:
    """The rules by caller; :meth:`decide` answers for one action on one user."""

    def __init__(self, rules: Mapping[str, CallerRule]) -> None:
        self._rules = dict(rules)

    def __repr__(self) -> str:
        return f"CallerPolicy(callers={sorted(self._rules)!r})"

    @property
    def callers(self) -> frozenset[str]:
        return frozenset(self._rules)

    @classmethod
    def parse(cls, text: str) -> CallerPolicy:
        """Read the JSON form; :class:`ConfigurationError` says what is wrong."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"caller policy is not JSON: {exc.msg}") from None
        callers = document.get("callers") if isinstance(document, dict) else None
        if not isinstance(callers, dict):
            raise ConfigurationError('caller policy needs a "callers" object')
        return cls({str(name): _rule(str(name), body) for name, body in callers.items()})

    def rule(self, caller: str) -> CallerRule | None:
        return self._rules.get(caller)

    def decide(
        self,
        caller: str,
        action: str,
        user_id: str | None = None,
        consents: frozenset[str] = frozenset(),
    ) -> Decision:
        """May ``caller`` take ``action`` (for ``user_id``, whose entries list
        ``consents``)? ``user_id`` is ``None`` for actions on no one user (audit)."""
        rule = self._rules.get(caller)
        if rule is None:
            return Decision(False, "caller_not_in_policy")
        if action not in rule.actions:
            return Decision(False, "action_not_allowed")
        if user_id is None or rule.users is UserScope.ALL:
            return Decision(True, "allowed")
        if rule.users is UserScope.PATTERN:
            assert rule.pattern is not None
            matched = rule.pattern.fullmatch(user_id) is not None
            return Decision(matched, "allowed" if matched else "user_not_matched")
        consented = caller in consents
        return Decision(consented, "allowed" if consented else "no_consent")

    @property
    def needs_consent(self) -> bool:
        return any(rule.users is UserScope.CONSENTED for rule in self._rules.values())


def _rule(name: str, body: Any) -> CallerRule:
    if not isinstance(body, dict):
        raise ConfigurationError(f"caller policy: {name!r} must be an object")
    actions = body.get("actions")
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise ConfigurationError(f"caller policy: {name!r} needs a list of actions")
    unknown = set(actions) - ACTIONS
    if unknown:
        raise ConfigurationError(
            f"caller policy: {name!r} names unknown actions {sorted(unknown)}; "
            f"known: {sorted(ACTIONS)}"
        )
    users = body.get("users", "*")
    if users == "*":
        return CallerRule(frozenset(actions), UserScope.ALL)
    if users == "consented":
        return CallerRule(frozenset(actions), UserScope.CONSENTED)
    if isinstance(users, dict) and isinstance(users.get("pattern"), str):
        try:
            pattern = re.compile(users["pattern"])
        except re.error as exc:
            raise ConfigurationError(f"caller policy: {name!r} pattern: {exc}") from None
        return CallerRule(frozenset(actions), UserScope.PATTERN, pattern)
    raise ConfigurationError(
        f'caller policy: {name!r} users must be "*", "consented" or {{"pattern": ...}}'
    )
