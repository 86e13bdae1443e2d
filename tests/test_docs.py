"""The docs say what the code does: every setting documented, the table current."""

from __future__ import annotations

import re

from tests.support import ROOT
from token_vault.service.settings import ServiceSettings, settings_table

PROVIDERS = ROOT / "docs" / "providers.md"
VARIABLE = r"TOKEN_VAULT_[A-Z][A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])"  # whole names, digits too


def test_the_settings_table_in_the_docs_is_the_one_the_model_generates() -> None:
    text = PROVIDERS.read_text(encoding="utf-8")
    table = text.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table == settings_table(), "regenerate docs/providers.md's settings table"


def test_every_setting_has_a_description() -> None:
    undescribed = [n for n, f in ServiceSettings.model_fields.items() if not f.description]
    assert undescribed == []


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    docs = PROVIDERS.read_text(encoding="utf-8")
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.mjs")]
    names = {name for path in sources for name in re.findall(VARIABLE, path.read_text("utf-8"))}
    assert len(names) > 15
    assert sorted(name for name in names if f"`{name}`" not in docs) == []
