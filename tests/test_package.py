"""The front door: `token_vault.__all__` is exactly what the package exposes.

As httpx checks its own: every public name bound in ``token_vault/__init__.py`` (other
than a submodule) is exported, ``__all__`` is sorted, and what it exports is the
project's own. Every module's ``__all__`` names only things that exist.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import token_vault
from token_vault import errors


def public_names(module: ModuleType) -> set[str]:
    """Names bound in the module that do not start with "_", other than submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and value is not annotations  # bound by `from __future__ import annotations`
    }


def test_all_is_sorted_without_repeats() -> None:
    assert token_vault.__all__ == sorted(token_vault.__all__)
    assert len(token_vault.__all__) == len(set(token_vault.__all__))


def test_all_is_exactly_the_public_names() -> None:
    # The OpenID Connect names are imported on first use (they need the oidc extra).
    lazy = set(token_vault._OIDC_NAMES)
    assert set(token_vault.__all__) == public_names(token_vault) | lazy
    assert lazy <= set(token_vault.__all__)


def test_the_names_imported_on_first_use_are_the_ones_their_modules_define() -> None:
    for name, module in token_vault._OIDC_NAMES.items():
        assert getattr(token_vault, name) is getattr(importlib.import_module(module), name)


def test_every_export_is_the_projects_own() -> None:
    for name in token_vault.__all__:
        module = getattr(token_vault, name).__module__
        assert module.startswith("token_vault."), (name, module)


def test_every_error_is_exported_and_derives_from_vault_error() -> None:
    assert errors.__all__ == sorted(errors.__all__)
    assert set(errors.__all__) == {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    for name in errors.__all__:
        error = getattr(errors, name)
        assert issubclass(error, token_vault.VaultError), name
        assert name in token_vault.__all__, name
        assert getattr(token_vault, name) is error


MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(token_vault.__path__, prefix="token_vault.")
    if not info.name.endswith(".__main__")  # importing it runs the command line
)
WITH_ALL = [name for name in MODULES if hasattr(importlib.import_module(name), "__all__")]


def test_every_subpackage_and_module_is_walked() -> None:
    subpackages = {"cli", "crypto", "oidc", "service", "storage", "testing", "vault"}
    assert {f"token_vault.{name}" for name in subpackages} <= set(MODULES)
    assert {"token_vault.crypto", "token_vault.cli", "token_vault.errors"} <= set(WITH_ALL)


@pytest.mark.parametrize("name", WITH_ALL)
def test_module_all_names_only_what_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == [], f"{name}.__all__ names what it does not have"
