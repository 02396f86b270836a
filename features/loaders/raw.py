"""How a loader hands its output to ingest: raw tables in contract shape, and a summary of them.

A loader builds frames with the contract columns (in any order, in roughly the right types) and an
optional `_reject_reason` column; `RawOutput.write` puts the columns in contract order, casts them to
the contract types (a failing cast is a loader bug, so it raises) and writes the partition that
`features.ingest` will validate. Every row is written: flagged rows are quarantined by ingest, never
dropped here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.contract import LOADER_REJECT_COLUMN, TABLES
from features.tables import write_partition


@dataclass(frozen=True)
class LoadSummary:
    """What one loader run read and wrote."""

    dataset: str
    source_rows: int  # lines of the source's main file(s): invoice lines, ratings, weekly sales, impressions
    rows_written: dict[str, int]  # per raw table (and side table), summed over its partitions
    rows_flagged: dict[str, dict[str, int]]  # per table: `_reject_reason` -> rows
    files: tuple[Path, ...] = field(default=())

    def describe(self) -> str:
        """A few human-readable lines for the command line."""
        lines = [f"{self.dataset}: {self.source_rows:,} source rows"]
        for table, rows in self.rows_written.items():
            lines.append(f"  {table}: {rows:,} rows")
            for reason, count in self.rows_flagged.get(table, {}).items():
                lines.append(f"    flagged {count:,}: {reason}")
        return "\n".join(lines)


def conform_to_contract(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Contract columns in contract order and types, then `_reject_reason` if the frame has it."""
    schema = TABLES[table]
    missing = [name for name in schema.column_names if name not in frame.columns]
    if missing:
        raise ValueError(f"loader built table {table} without columns {missing}")
    columns = [pl.col(column.name).cast(column.dtype, strict=True) for column in schema.columns]
    if LOADER_REJECT_COLUMN in frame.columns:
        columns.append(pl.col(LOADER_REJECT_COLUMN).cast(pl.String, strict=True))
    return frame.select(columns)


class RawOutput:
    """Writes one data set's raw partitions under `raw_dir` and counts what it wrote."""

    def __init__(self, dataset: str, raw_dir: Path) -> None:
        self.dataset = dataset
        self.raw_dir = raw_dir
        self._rows: dict[str, int] = {}
        self._flagged: dict[str, dict[str, int]] = {}
        self._files: list[Path] = []

    def write(self, table: str, frame: pl.DataFrame, partition: str | None = None) -> None:
        """Write a contract table's partition (default: the data set's name)."""
        conformed = conform_to_contract(frame, table)
        self._record(table, conformed, partition)
        if LOADER_REJECT_COLUMN in conformed.columns:
            counts = conformed.get_column(LOADER_REJECT_COLUMN).drop_nulls().value_counts(sort=True)
            flagged = self._flagged.setdefault(table, {})
            for reason, count in counts.iter_rows():
                flagged[reason] = flagged.get(reason, 0) + count

    def write_side_table(self, name: str, frame: pl.DataFrame, partition: str | None = None) -> None:
        """A data-set-specific table outside the contract (ingest does not read it)."""
        if name in TABLES:
            raise ValueError(f"{name} is a contract table: use write()")
        self._record(name, frame, partition)

    def summary(self, source_rows: int) -> LoadSummary:
        return LoadSummary(
            dataset=self.dataset,
            source_rows=source_rows,
            rows_written=dict(self._rows),
            rows_flagged={table: dict(reasons) for table, reasons in self._flagged.items()},
            files=tuple(self._files),
        )

    def _record(self, table: str, frame: pl.DataFrame, partition: str | None) -> None:
        path = write_partition(frame, self.raw_dir, table, partition or self.dataset)
        self._files.append(path)
        self._rows[table] = self._rows.get(table, 0) + frame.height


def folder_with(source: Path, required_files: Iterable[str], what: str) -> Path:
    """The data set's folder: `source` itself or the folder of one of its files, holding every
    required file; otherwise an error naming the folder and what is missing."""
    folder = source if source.is_dir() else source.parent
    missing = [name for name in required_files if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not {what}, missing {missing}")
    return folder
