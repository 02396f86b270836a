"""The committed contract document is exactly what the code declares."""

from __future__ import annotations

from configs import PROJECT_ROOT
from features.contract import TABLES, contract_markdown


def test_contract_document_is_up_to_date() -> None:
    committed = (PROJECT_ROOT / "features" / "CONTRACT.md").read_text()
    regenerate = "run: tradewind contract --markdown > features/CONTRACT.md"
    assert committed.strip() == contract_markdown().strip(), regenerate


def test_references_point_at_earlier_tables() -> None:
    order = list(TABLES)
    for table in TABLES.values():
        assert set(table.key) <= set(table.column_names)
        for column in table.columns:
            if column.references:
                target_table, target_column = column.references.split(".")
                assert order.index(target_table) < order.index(table.name), column.references
                assert target_column in TABLES[target_table].column_names
