"""Extras: the core works without any; a part that needs one says which, and how to get it.

The modules of the extras are hidden in a subprocess (tests/support/extras.py); the
packaging test (tests/test_packaging.py) proves the same with real installs.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT
from tests.support.extras import EVERY_EXTRA, cli_without, python_without
from token_vault.extra import DISTRIBUTION, MODULES, install_command

KEYS = "primary=k1,k1=" + "A" * 43 + "="


def test_the_core_imports_and_runs_without_any_extra(tmp_path: Path) -> None:
    code = """
import asyncio, os
from datetime import UTC, datetime, timedelta
import token_vault, token_vault.cli, token_vault.testing
from token_vault import Keyring, TokenVault
from token_vault.storage import migrate
from token_vault.storage.url import DatabaseURL

async def main():
    url = DatabaseURL.parse(os.environ["URL"])
    await migrate.upgrade(url)
    async with await TokenVault.open(url, Keyring.from_spec(os.environ["KEYS"])) as vault:
        await vault.upsert_refresh_token("alice", "rt-1", datetime.now(UTC) + timedelta(days=1))
        print((await vault.get_refresh_token("alice")).token)

asyncio.run(main())
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN and sys.modules[m]))
"""
    env = {"URL": f"sqlite:///{tmp_path / 'vault.db'}", "KEYS": KEYS}
    done = python_without(EVERY_EXTRA, code, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["rt-1", "loaded: []"]


def test_the_core_command_line_migrates_and_makes_keys_without_any_extra(tmp_path: Path) -> None:
    env = {"TOKEN_VAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'vault.db'}"}
    upgraded = cli_without(EVERY_EXTRA, "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    generated = cli_without(EVERY_EXTRA, "keys", "generate")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("TOKEN_VAULT_KEYS=primary=")


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["serve"], "service"),
        (["serve", "--dev"], "service"),
        (["refresher", "--once"], "service"),
        (["doctor"], "oidc"),
    ],
)
def test_a_command_without_its_extra_names_the_extra_to_install(
    args: list[str], extra: str
) -> None:
    done = cli_without(EVERY_EXTRA, *args)
    assert done.returncode == 3
    assert f"token-vault {args[0]} needs the {extra!r} extra" in done.stderr
    assert f"pip install '{DISTRIBUTION}[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_postgresql_without_the_postgres_extra_names_it() -> None:
    env = {"TOKEN_VAULT_DATABASE_URL": "postgresql://vault:hunter2secret@127.0.0.1:1/vault"}
    done = cli_without(["asyncpg", "greenlet"], "db", "upgrade", env=env)
    assert done.returncode == 3
    assert "a PostgreSQL database needs the 'postgres' extra" in done.stderr
    assert install_command("postgres") in done.stderr
    assert "hunter2secret" not in done.stderr
    assert "Traceback" not in done.stderr


def test_an_oidc_name_without_the_oidc_extra_is_an_import_error_naming_it() -> None:
    code = """
try:
    from token_vault import RelyingParty
except ImportError as error:
    from token_vault import MissingExtraError
    print(type(error).__name__, isinstance(error, MissingExtraError), error.extra, error.name)
    print(error)
"""
    done = python_without(MODULES["oidc"], code)
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()
    assert first == "MissingExtraError True oidc authlib"
    assert message.startswith("token_vault.RelyingParty needs the 'oidc' extra")
    assert message.endswith(install_command("oidc"))


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _installed_by(extra: str) -> set[str]:
    """Every distribution ``pip install oidc-token-vault[extra]`` brings (from metadata)."""
    extras: dict[str, list[str]] = _project()["optional-dependencies"]
    found: set[str] = set()
    todo = [Requirement(r) for r in extras[extra]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name == DISTRIBUTION:
            todo += [Requirement(r) for e in requirement.extras for r in extras[e]]
            continue
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        found.add(name)
        for text in importlib.metadata.requires(name) or []:
            needed = Requirement(text)
            wanted = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(needed)
    return found


@pytest.mark.parametrize("extra", sorted(MODULES))
def test_each_extra_installs_the_modules_require_checks(extra: str) -> None:
    owners = importlib.metadata.packages_distributions()
    installed = _installed_by(extra)
    for module in MODULES[extra]:
        assert {canonicalize_name(d) for d in owners[module]} & installed, (extra, module)


def test_the_extras_and_the_distribution_name_are_the_ones_pyproject_declares() -> None:
    project = _project()
    assert project["name"] == DISTRIBUTION
    extras = set(project["optional-dependencies"])
    assert extras == {*MODULES, "all", "dev"}
