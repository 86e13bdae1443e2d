"""For your own tests: a frozen clock, fixed keyrings, a fake provider, a real database.

* :class:`FrozenClock`: pass as ``clock=`` to the vault and ``AccessTokens``.
* :func:`fixed_keyring`: the same keys every run (never for production).
* :class:`FakeProvider`: an OpenID provider on httpx's ``MockTransport`` that refreshes,
  rotates, revokes and fails on demand (needs the ``oidc`` extra; imported on first use).
* :class:`PgCluster` (``token_vault.testing.pgcluster``): a throwaway PostgreSQL cluster
  (initdb + pg_ctl in a temporary directory, as an unprivileged user under root).
* :class:`PgBouncer` (``token_vault.testing.pgbouncer``): a throwaway PgBouncer in front
  of a :class:`PgCluster`, in transaction pooling mode by default.
"""

from __future__ import annotations

import importlib
import typing

from token_vault.extra import require as _require
from token_vault.testing.clock import FrozenClock
from token_vault.testing.keys import fixed_keyring
from token_vault.testing.pgbouncer import PgBouncer
from token_vault.testing.pgcluster import PgCluster

if typing.TYPE_CHECKING:
    from token_vault.testing.provider import FakeProvider

__all__ = ["FakeProvider", "FrozenClock", "PgBouncer", "PgCluster", "fixed_keyring"]


def __getattr__(name: str) -> object:
    if name != "FakeProvider":
        raise AttributeError(f"module 'token_vault.testing' has no attribute {name!r}")
    _require("oidc", "token_vault.testing.FakeProvider")
    value = importlib.import_module("token_vault.testing.provider").FakeProvider
    globals()[name] = value
    return value
