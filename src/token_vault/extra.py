"""The optional parts of token-vault and the extras that install them.

The core needs no extra: the keyring, the vault, SQLite, migrations and the
``token-vault`` command. The rest comes with extras of the ``oidc-token-vault``
distribution::

    postgres   PostgreSQL (asyncpg, SQLAlchemy's asyncio engine for migrations)
    oidc       sign-in, access tokens, logout tokens (Authlib, httpx, joserfc, Starlette)
    service    ``token-vault serve`` and the refresher (FastAPI, uvicorn, Prometheus),
               with oidc and postgres
    all        all of them

Code that needs an extra calls :func:`require` before importing it, so a missing extra
is one clear :class:`~token_vault.errors.MissingExtraError` naming the command to run,
not a ``ModuleNotFoundError`` from deep inside.
"""

from __future__ import annotations

import importlib

from token_vault.errors import MissingExtraError

__all__ = ["DISTRIBUTION", "MODULES", "install_command", "require"]

DISTRIBUTION = "oidc-token-vault"
"""The name to ``pip install``; the import name stays ``token_vault``."""

_OIDC = ("authlib", "httpx", "itsdangerous", "joserfc", "starlette")

MODULES: dict[str, tuple[str, ...]] = {
    "postgres": ("asyncpg", "greenlet"),
    "oidc": _OIDC,
    "service": (
        *_OIDC,
        "fastapi",
        "prometheus_client",
        "python_multipart",
        "standardwebhooks",
        "uvicorn",
    ),
    "kms": ("boto3",),
    "pkcs11": ("pkcs11",),
    "otel": ("opentelemetry",),  # the SDK and instrumentations: see _otel_installed()
}
"""What each extra makes importable (``service`` also installs ``postgres``, which is
checked where a PostgreSQL database is opened)."""


def install_command(extra: str) -> str:
    """The command that installs ``extra``, e.g. ``pip install 'oidc-token-vault[oidc]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(extra: str, what: str) -> None:
    """Import the modules of ``extra``, or raise :class:`MissingExtraError` saying that
    ``what`` (e.g. "token-vault serve") needs it and how to install it."""
    missing: list[str] = []
    for module in MODULES[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            missing.append(module)
    if missing:
        raise MissingExtraError(
            f"{what} needs the {extra!r} extra, which is not installed "
            f"(missing: {', '.join(missing)}); install it with: {install_command(extra)}",
            extra=extra,
            modules=tuple(missing),
        )
