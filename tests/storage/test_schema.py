"""The table model (storage/schema.py) and the schema the migrations build are the same."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from token_vault.storage.migrate import run_on_connection
from token_vault.storage.schema import COLUMNS, auth_vault, metadata
from token_vault.storage.url import DatabaseURL


def _differences(model: sa.MetaData) -> Any:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, model))

    return compare


def _model_with_extra_column() -> sa.MetaData:
    extended = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.tables.values():
        table.to_metadata(extended)
    extended.tables["auth_vault"].append_column(sa.Column("extra_note", sa.Text()))
    return extended


async def test_migrations_build_exactly_the_model(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    assert await run_on_connection(url, _differences(metadata)) == []


async def test_a_column_only_in_the_model_is_found(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)
    differences = await run_on_connection(url, _differences(_model_with_extra_column()))
    assert [(d[0], d[2], d[3].name) for d in differences] == [
        ("add_column", "auth_vault", "extra_note")
    ]


async def test_a_column_only_in_the_database_is_found(database_url: str) -> None:
    url = DatabaseURL.parse(database_url)

    def add_column(connection: Connection) -> None:
        connection.execute(sa.text("ALTER TABLE auth_vault ADD COLUMN extra_note TEXT"))

    await run_on_connection(url, add_column)
    differences = await run_on_connection(url, _differences(metadata))
    assert [(d[0], d[2], d[3].name) for d in differences] == [
        ("remove_column", "auth_vault", "extra_note")
    ]


def test_statements_read_the_model_columns_in_order() -> None:
    assert COLUMNS.split(", ") == [column.name for column in auth_vault.columns]
