"""The `token-vault` command, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    return subprocess.run(
        [sys.executable, "-m", "token_vault", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
