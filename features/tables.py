"""Where contract tables live on disk, and how to read them.

A table is a folder of parquet partitions: `<base>/<table>/<partition>.parquet`. Ingesting the same
partition again replaces its file, so re-running a day is idempotent; readers see the union of all
partitions. The same layout serves contract tables, quarantine and raw input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from features.contract import TABLES


def partition_path(base: Path, table: str, partition: str) -> Path:
    return base / table / f"{partition}.parquet"


def partitions(base: Path, table: str) -> list[Path]:
    folder = base / table
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def write_partition(frame: pl.DataFrame, base: Path, table: str, partition: str) -> Path:
    """Write one partition atomically (write to a temporary name, then rename)."""
    path = partition_path(base, table, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path


def scan_table(base: Path, table: str) -> pl.LazyFrame:
    """All partitions of a contract table, lazily; an empty frame with the contract schema if none."""
    files = partitions(base, table)
    if not files:
        return pl.LazyFrame(schema=TABLES[table].polars_schema)
    return pl.scan_parquet(files)


def read_table(base: Path, table: str) -> pl.DataFrame:
    return scan_table(base, table).collect()


def read_required_tables(base: Path, tables: Iterable[str]) -> dict[str, pl.DataFrame]:
    """Read contract tables a pipeline cannot do without; an empty or missing one is a
    FileNotFoundError naming it and the command that makes it."""
    frames = {table: read_table(base, table) for table in tables}
    for table, frame in frames.items():
        if frame.is_empty():
            raise FileNotFoundError(
                f"{base / table}: no rows in the contract table {table!r}; run `tradewind demo` "
                "(or generate and ingest) first"
            )
    return frames


def snapshot(base: Path) -> dict[str, object]:
    """Identify exactly which contract data a run used: rows and a content digest per table.

    Training runs log this so a model can be traced back to its data; the same data gives the
    same `digest` on any machine.
    """
    overall = hashlib.sha256()
    tables: dict[str, dict[str, object]] = {}
    for table in TABLES:
        files = partitions(base, table)
        if not files:
            continue
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.stem.encode())
            digest.update(path.read_bytes())
        rows = sum(pl.scan_parquet(path).select(pl.len()).collect().item() for path in files)
        tables[table] = {
            "rows": rows,
            "partitions": [path.stem for path in files],
            "digest": digest.hexdigest()[:16],
        }
        overall.update(table.encode() + digest.digest())
    return {"digest": overall.hexdigest()[:16], "tables": tables}
