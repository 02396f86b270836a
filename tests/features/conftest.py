"""Shared fixtures for tests/features: tiny contract tables written to a temporary data folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from configs.settings import Settings
from features.contract import TABLES
from features.tables import write_partition

ContractRows = dict[str, list[dict[str, Any]]]


def write_contract_rows(data_dir: Path, tables: ContractRows) -> Settings:
    """Write contract tables given as rows (missing columns are empty) and return settings for
    `data_dir`. Tables not given stay absent, which readers see as empty."""
    settings = Settings(data_dir=data_dir)
    for name, rows in tables.items():
        frame = pl.DataFrame(rows, schema=TABLES[name].polars_schema)
        write_partition(frame, settings.contract_dir, name, "test")
    return settings


@pytest.fixture
def contract_data_dir(tmp_path: Path) -> Callable[[ContractRows], Settings]:
    """A function that writes tiny contract tables into a fresh data folder under tmp_path."""

    def write(tables: ContractRows) -> Settings:
        return write_contract_rows(tmp_path / "data", tables)

    return write
