"""Run Python or the `token-vault` command with some installed modules hidden, as if an
extra were not installed (``sys.modules[name] = None`` makes every import of it fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable

from token_vault.extra import MODULES

EVERY_EXTRA = sorted({module for modules in MODULES.values() for module in modules})
"""Every module an extra brings: hidden, only the core is left."""


def python_without(
    hidden: Iterable[str], code: str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    prelude = f"import sys\nHIDDEN = {sorted(hidden)!r}\n"
    prelude += "sys.modules.update(dict.fromkeys(HIDDEN))\n"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_without(
    hidden: Iterable[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    code = f"sys.argv = ['token-vault', *{list(args)!r}]\n"
    return python_without(hidden, code + "from token_vault.cli import main\nmain()\n", env=env)
