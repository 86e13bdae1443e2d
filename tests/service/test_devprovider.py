"""The dev provider from the installed package: Node found or clearly asked for, npm
packages installed once into a user cache (never into the package), the copy kept current."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import cli
from token_vault.service import devprovider
from token_vault.service.devprovider import DevProviderError, devprovider_dir, ensure_installed

SHIPPED = {"server.mjs", "package.json", "package-lock.json"}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOKEN_VAULT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_node(bindir: Path, version: str) -> None:
    bindir.mkdir()
    node = bindir / "node"
    node.write_text(f"#!/bin/sh\necho {version}\n")
    node.chmod(0o755)


def test_the_provider_ships_inside_the_package() -> None:
    assert devprovider_dir() == Path(devprovider.__file__).parent / "devprovider_node"
    assert {p.name for p in devprovider_dir().iterdir()} == SHIPPED


def test_without_node_the_message_says_so_and_how_to_get_it(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOKEN_VAULT_NODE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevProviderError) as caught:
        ensure_installed()
    message = str(caught.value)
    assert "Node.js, and 'node' was not found on PATH" in message
    assert "install Node.js 20 or newer with npm (https://nodejs.org/" in message
    assert "TOKEN_VAULT_NODE" in message
    assert "TOKEN_VAULT_OIDC_ISSUER" in message
    assert not cache.exists()


def test_an_old_node_is_refused_with_the_version_it_found(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_node(tmp_path / "bin", "v18.19.0")
    monkeypatch.setenv("TOKEN_VAULT_NODE", str(tmp_path / "bin" / "node"))
    with pytest.raises(DevProviderError, match=r"is Node.js v18.19.0; the dev provider needs 20"):
        ensure_installed()


def test_serve_dev_without_node_exits_3_with_the_message(tmp_path: Path) -> None:
    env = {
        "PATH": str(tmp_path / "empty"),
        "TOKEN_VAULT_DEV_DIR": str(tmp_path / "var"),
        "TOKEN_VAULT_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = cli("serve", "--dev", env={**env, "TOKEN_VAULT_PORT": "1"})
    assert done.returncode == 3, done.stderr
    assert "error: dev mode runs its OpenID provider on Node.js" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_npm_packages_are_installed_once_into_the_cache_with_a_progress_line(
    cache: Path,
) -> None:
    said: list[str] = []
    first = ensure_installed(progress=said.append)
    assert first.parent == cache
    assert {p.name for p in first.iterdir()} == {*SHIPPED, "node_modules"}
    assert len(said) == 2
    assert said[0].startswith("dev provider: installing its npm packages (oidc-provider) into")
    assert said[1].startswith("dev provider: installed in ")
    assert not (devprovider_dir() / "node_modules").exists()
    assert set(os.listdir(cache)) == {"devprovider.lock", first.name}

    (first / "server.mjs").write_text("// an older server\n")
    again = ensure_installed(progress=said.append)
    assert again == first
    assert len(said) == 2  # nothing installed the second time
    shipped = (devprovider_dir() / "server.mjs").read_bytes()
    assert (first / "server.mjs").read_bytes() == shipped
