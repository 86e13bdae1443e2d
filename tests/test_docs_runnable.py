"""Every block the docs mark as runnable runs, so the docs cannot rot.

The convention: a fenced block whose info string is ``sh runnable`` or ``python
runnable``. A document's blocks run in order, in one fresh directory, each as its own
process (``bash -euo pipefail``, or this Python), with ``token-vault`` and ``python3`` of
this environment first on PATH and no ``TOKEN_VAULT_*`` variable set. Blocks that need
Docker, a real provider or the network are left unmarked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT

DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
# Also indented, inside a list item.
FENCE = re.compile(r"^[ ]*```(\w+) runnable\n(.*?)^[ ]*```$", re.MULTILINE | re.DOTALL)


def runnable_blocks(path: Path) -> list[tuple[str, str]]:
    found = FENCE.findall(path.read_text(encoding="utf-8"))
    return [(language, textwrap.dedent(code)) for language, code in found]


def test_the_guides_have_runnable_blocks_in_the_languages_this_test_runs() -> None:
    counts = {p.name: len(runnable_blocks(p)) for p in DOCS}
    assert counts["quickstart.md"] >= 2
    assert counts["deploy.md"] >= 1
    assert counts["operations.md"] >= 3
    languages = {language for p in DOCS for language, _ in runnable_blocks(p)}
    assert languages <= {"sh", "python"}


@pytest.mark.slow
@pytest.mark.parametrize("doc", [p for p in DOCS if runnable_blocks(p)], ids=lambda p: p.name)
def test_every_runnable_block_runs(doc: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_VAULT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for number, (language, code) in enumerate(runnable_blocks(doc), start=1):
        argv = ["bash", "-euo", "pipefail", "-c", code]
        if language == "python":
            argv = [sys.executable, "-c", code]
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (
            f"{doc.name}, runnable block {number} failed:\n{code}\n"
            f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
