"""Ingest: check raw files against the data contract, keep good rows, quarantine bad ones.

Two phases, so that a broken file never half-lands:
1. Read every file and conform its columns to the contract. A missing column, or a column whose
   values cannot be read as the contract's type at all, refuses the file with one line naming
   file and column. If any file is refused, nothing is written.
2. Table by table, in contract order (a table after the tables it references), apply the row
   rules. Good rows go to `contract/<table>/<partition>.parquet`; bad rows go to
   `quarantine/<table>/<partition>.parquet` as they arrived (text), with `reason` (the first rule
   they broke), `reasons` (all of them), the source file and row number. For every table
   rows in = rows accepted + rows quarantined (+ the rows of users who asked to be forgotten,
   dropped first and kept nowhere), and the counts are appended to `ingest_log.jsonl`.

Ingesting the same partition again replaces its files, so a re-run is idempotent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from rich.progress import Progress

from configs import InputError
from configs.settings import Settings
from features.contract import LOADER_REJECT_COLUMN, TABLES, Column, TableSchema
from features.tables import partition_path, partitions, read_table, write_partition
from models.terminal_progress import progress_on_terminal

USER_COLUMN = "user_id"  # rows of a user who was forgotten never enter again (features/forget.py)

RAW_SUFFIXES = (".parquet", ".csv")
_TRUE_TEXT = ("true", "t", "yes", "y", "1")
_FALSE_TEXT = ("false", "f", "no", "n", "0")


class FileRefused(InputError):
    """A file cannot be ingested at all; the message is one line naming file and column."""


@dataclass(frozen=True)
class RawFile:
    table: str
    partition: str
    path: Path


@dataclass
class TableIngest:
    table: str
    partition: str
    source: str
    rows_in: int
    accepted: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    # rows of users who asked to be forgotten (`tradewind forget-user`): dropped, never kept anywhere,
    # or kept with the user id cleared where the contract allows an unknown user (auctions)
    forgotten: int = 0
    forgotten_cleared: int = 0


@dataclass
class IngestReport:
    results: list[TableIngest]

    @property
    def rows_in(self) -> int:
        return sum(result.rows_in for result in self.results)

    @property
    def accepted(self) -> int:
        return sum(result.accepted for result in self.results)

    @property
    def quarantined(self) -> int:
        return sum(result.quarantined for result in self.results)

    @property
    def forgotten(self) -> int:
        return sum(result.forgotten for result in self.results)


class IngestRefused(InputError):
    """One or more files were refused; nothing was written."""

    def __init__(self, refusals: list[str]) -> None:
        super().__init__("\n".join(refusals))
        self.refusals = refusals


# ---------------------------------------------------------------------------------------------
# finding and reading raw files


def discover_raw_files(source: Path, partition: str | None = None) -> list[RawFile]:
    """Raw files in contract order.

    `source` is a folder holding `<table>/<partition>.{parquet,csv}` (what the simulator and the
    real-data loaders write) and/or `<table>.{parquet,csv}` (a user's drop), or a single
    `<table>.{parquet,csv}` file. `partition` keeps only that partition of a folder layout and
    names the partition of flat files (default: the folder's name).
    """
    if source.is_file():
        table = source.stem
        if table not in TABLES:
            raise IngestRefused([f"{source}: file name does not name a contract table ({', '.join(TABLES)})"])
        return [RawFile(table, partition or source.parent.name, source)]
    if not source.is_dir():
        raise IngestRefused([f"{source}: no such file or folder"])
    found = []
    for table in TABLES:
        for suffix in RAW_SUFFIXES:
            flat = source / f"{table}{suffix}"
            if flat.is_file():
                found.append(RawFile(table, partition or source.name, flat))
            for path in sorted((source / table).glob(f"*{suffix}")) if (source / table).is_dir() else []:
                if partition is None or path.stem == partition:
                    found.append(RawFile(table, path.stem, path))
    return found


def read_raw(path: Path) -> pl.DataFrame:
    """Parquet keeps its types; CSV is read as text so the contract decides every type."""
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False)
    except Exception as error:  # a corrupt file is refused, not a stack trace
        raise FileRefused(f"{path}: cannot be read as {path.suffix[1:]}: {error}") from None


# ---------------------------------------------------------------------------------------------
# phase 1: conform columns to the contract types


# ISO 8601 forms, with an offset or without (naive text is read as UTC, as the contract says)
_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%.f%z")
_NAIVE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def _parse_timestamps(text: pl.Series) -> pl.Series:
    """Each value by the first ISO 8601 form that reads it; a column may mix forms."""
    text = text.str.replace(r"Z$", "+00:00")
    candidates = [
        text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC") for fmt in _AWARE_FORMATS
    ] + [
        text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _NAIVE_FORMATS
    ]
    return pl.select(pl.coalesce(candidates)).to_series().alias(text.name)


def _text_to(series: pl.Series, dtype: pl.DataType) -> pl.Series:
    text = series.str.strip_chars()
    text = pl.Series(series.name, text).set(text == "", None)  # an empty CSV cell is a missing value
    if isinstance(dtype, pl.Datetime):
        return _parse_timestamps(text)
    if dtype == pl.Date:
        return text.str.to_date(strict=False)
    if dtype == pl.Boolean:
        lowered = text.str.to_lowercase()
        return (
            pl.select(
                pl.when(lowered.is_in(_TRUE_TEXT))
                .then(True)
                .when(lowered.is_in(_FALSE_TEXT))
                .then(False)
                .otherwise(None)
                .alias(series.name)
            )
            .to_series()
            .cast(pl.Boolean)
        )
    return text.cast(dtype, strict=False)


def _convert(series: pl.Series, column: Column, source: str) -> pl.Series:
    """The column in its contract type; values that cannot be read become null."""
    dtype, actual = column.dtype, series.dtype
    if actual == dtype:
        return series
    if actual == pl.String:
        return _text_to(series, dtype)
    if isinstance(dtype, pl.Datetime) and isinstance(actual, pl.Datetime):
        series = series.dt.cast_time_unit("us")
        if actual.time_zone is None:
            return series.dt.replace_time_zone("UTC")
        return series.dt.convert_time_zone("UTC")
    if isinstance(dtype, pl.Datetime) and actual == pl.Date:
        return series.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype == pl.Date and isinstance(actual, pl.Datetime):
        return series.dt.date()
    if dtype.is_integer() and actual.is_float():
        # a fractional quantity is unreadable as a count, not silently truncated
        whole = series.is_not_nan() & (series == series.round(0))
        return series.set(~whole.fill_null(False), None).cast(dtype, strict=False)
    if (dtype.is_numeric() and actual.is_numeric()) or (dtype == pl.Boolean and actual.is_integer()):
        return series.cast(dtype, strict=False)
    if dtype == pl.String and (actual.is_numeric() or actual == pl.Boolean):
        return series.cast(pl.String)
    raise FileRefused(f"{source}: column '{column.name}' is mistyped: expected {dtype}, found {actual}")


@dataclass
class ConformedFile:
    raw: RawFile
    original: pl.DataFrame
    typed: pl.DataFrame  # contract columns in contract types (unreadable values are null)
    unreadable: dict[str, pl.Series]  # per column: value present in the file but not readable
    loader_reason: pl.Series | None
    ignored_columns: list[str]


def conform(raw: RawFile, frame: pl.DataFrame) -> ConformedFile:
    schema = TABLES[raw.table]
    source = str(raw.path)
    missing = [name for name in schema.column_names if name not in frame.columns]
    if missing:
        raise FileRefused(
            f"{source}: missing column '{missing[0]}' "
            f"(table {raw.table} needs {', '.join(schema.column_names)})"
        )
    typed, unreadable = {}, {}
    for column in schema.columns:
        original = frame.get_column(column.name)
        converted = _convert(original, column, source)
        lost = original.is_not_null() & converted.is_null()
        present = int(original.is_not_null().sum())
        if present and int(lost.sum()) == present:
            example = original.drop_nulls()[0]
            raise FileRefused(
                f"{source}: column '{column.name}' is mistyped: expected {column.dtype}, "
                f"no value can be read as one (first value {example!r})"
            )
        typed[column.name] = converted.alias(column.name)
        unreadable[column.name] = lost
    loader_reason = frame.get_column(LOADER_REJECT_COLUMN) if LOADER_REJECT_COLUMN in frame.columns else None
    ignored = [
        name for name in frame.columns if name not in schema.column_names and name != LOADER_REJECT_COLUMN
    ]
    return ConformedFile(raw, frame, pl.DataFrame(typed), unreadable, loader_reason, ignored)


# ---------------------------------------------------------------------------------------------
# phase 2: row rules


def _known_values(contract_dir: Path, reference: str) -> pl.Series:
    table, column = reference.split(".")
    return read_table(contract_dir, table).get_column(column).unique()


def _keys_in_other_partitions(contract_dir: Path, schema: TableSchema, partition: str) -> pl.DataFrame:
    others = [path for path in partitions(contract_dir, schema.name) if path.stem != partition]
    if not others:
        return pl.DataFrame()
    return pl.scan_parquet(others).select(schema.key).unique().collect()


def row_checks(conformed: ConformedFile, contract_dir: Path, now: datetime) -> tuple[list[str], pl.DataFrame]:
    """Reason names and a frame of boolean columns, one per check, in priority order."""
    schema = TABLES[conformed.raw.table]
    typed = conformed.typed
    checks: dict[str, pl.Series] = {}

    def add(reason: str, failing: pl.Series) -> None:
        failing = failing.fill_null(False)
        checks[reason] = checks[reason] | failing if reason in checks else failing

    if conformed.loader_reason is not None:
        for reason in conformed.loader_reason.drop_nulls().unique().sort():
            add(reason, conformed.loader_reason == reason)
    for column in schema.columns:
        add(f"unreadable {column.name}", conformed.unreadable[column.name])
    for column in schema.columns:
        if not column.nullable:
            add(f"missing {column.name}", typed.get_column(column.name).is_null())
    currencies = _known_values(contract_dir, "fx_rates.currency")
    for column in schema.columns:
        values = typed.get_column(column.name)
        known: pl.Series | None = None
        if column.allowed is not None:
            known = pl.Series(column.allowed)
        elif column.references is not None:
            known = _known_values(contract_dir, column.references)
        elif column.is_currency:
            known = currencies
        if known is not None:
            add(f"unknown {column.name}", values.is_not_null() & ~values.is_in(known.implode()))
        if column.positive:
            add(f"zero or negative {column.name}", values <= 0)
        if column.non_negative:
            add(f"negative {column.name}", values < 0)
        if column.not_future:
            limit = now.date() if column.dtype == pl.Date else now
            add(f"future {column.name}", values > limit)
    for rule in schema.rules:
        add(rule.reason, typed.select(rule.failing).to_series())
    # duplicates last: a row that breaks a rule is quarantined for that, not as a duplicate
    exact_duplicate = ~typed.is_unique() & typed.select(~pl.struct(pl.all()).is_first_distinct()).to_series()
    add("exact duplicate", exact_duplicate)
    key_label = "+".join(schema.key)
    add(f"duplicate {key_label}", typed.select(~pl.struct(schema.key).is_first_distinct()).to_series())
    existing = _keys_in_other_partitions(contract_dir, schema, conformed.raw.partition)
    if existing.height:
        clash = typed.select(schema.key).join(
            existing.with_columns(pl.lit(True).alias("_clash")), on=schema.key, how="left", nulls_equal=True
        )
        add(f"duplicate {key_label}", clash.get_column("_clash").fill_null(False))
    return list(checks), pl.DataFrame(checks)


def split_rows(
    conformed: ConformedFile, contract_dir: Path, now: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accepted rows in contract types, quarantined rows as text with their reasons)."""
    reasons, checks = row_checks(conformed, contract_dir, now)
    flagged = checks.select(
        pl.coalesce([pl.when(pl.col(r)).then(pl.lit(r)) for r in reasons]).alias("reason"),
        pl.concat_str(
            [pl.when(pl.col(r)).then(pl.lit(r)) for r in reasons], separator="; ", ignore_nulls=True
        ).alias("reasons"),
    )
    bad = flagged.get_column("reason").is_not_null()
    accepted = conformed.typed.filter(~bad)
    original = conformed.original.with_row_index("source_row").filter(bad)
    quarantined = original.select(
        pl.col("source_row").cast(pl.Int64),
        *[pl.col(name).cast(pl.String) for name in original.columns if name != "source_row"],
    ).with_columns(
        flagged.filter(bad).get_column("reason"),
        flagged.filter(bad).get_column("reasons"),
        pl.lit(str(conformed.raw.path)).alias("source_file"),
        pl.lit(now).alias("ingested_at"),
    )
    return accepted, quarantined


# ---------------------------------------------------------------------------------------------
# forgotten users


def without_forgotten(
    conformed: ConformedFile, is_forgotten: Callable[[str], bool]
) -> tuple[ConformedFile, int, int]:
    """The file without the rows of forgotten users: (file, rows dropped, user ids cleared).

    A row whose `user_id` is required is dropped before any check, so not even the quarantine keeps
    it; where the contract allows an unknown user, the row stays with the id cleared.
    """
    column = next((c for c in TABLES[conformed.raw.table].columns if c.name == USER_COLUMN), None)
    if column is None:
        return conformed, 0, 0
    ids = conformed.original.get_column(USER_COLUMN).cast(pl.String)
    unique = ids.drop_nulls().unique()
    matched = {value for value in unique.to_list() if is_forgotten(value)}
    if not matched:
        return conformed, 0, 0
    hit = ids.is_in(list(matched)).fill_null(False)
    if column.nullable:
        cleared = conformed.original.with_columns(
            pl.when(hit).then(None).otherwise(pl.col(USER_COLUMN)).alias(USER_COLUMN)
        )
        typed = conformed.typed.with_columns(
            pl.when(hit).then(None).otherwise(pl.col(USER_COLUMN)).alias(USER_COLUMN)
        )
        unreadable = {**conformed.unreadable, USER_COLUMN: conformed.unreadable[USER_COLUMN] & ~hit}
        return replace(conformed, original=cleared, typed=typed, unreadable=unreadable), 0, int(hit.sum())
    keep = ~hit
    return (
        replace(
            conformed,
            original=conformed.original.filter(keep),
            typed=conformed.typed.filter(keep),
            unreadable={name: flags.filter(keep) for name, flags in conformed.unreadable.items()},
            loader_reason=conformed.loader_reason.filter(keep)
            if conformed.loader_reason is not None
            else None,
        ),
        int(hit.sum()),
        0,
    )


# ---------------------------------------------------------------------------------------------
# the whole job


def ingest_files(
    files: Iterable[RawFile], settings: Settings, now: datetime | None = None, progress: bool = True
) -> IngestReport:
    """Validate `files` and write contract and quarantine partitions. Raises IngestRefused."""
    now = now or datetime.now(UTC)
    files = sorted(files, key=lambda raw: list(TABLES).index(raw.table))
    conformed, refusals = [], []
    for raw in files:
        try:
            conformed.append(conform(raw, read_raw(raw.path)))
        except FileRefused as refusal:
            refusals.append(str(refusal))
    if refusals:
        raise IngestRefused(refusals)

    from features.forget import ForgottenUsers

    forgotten_users = ForgottenUsers(settings)
    if forgotten_users.error:  # an unreadable list must not let forgotten users back in
        raise IngestRefused(
            [f"{settings.root}: the forgotten-users list cannot be read: {forgotten_users.error}"]
        )
    results = []
    with Progress(disable=not progress_on_terminal(sys.stdout, progress), transient=True) as bar:
        task = bar.add_task("ingest", total=len(conformed))
        for item in conformed:
            bar.update(task, description=f"ingest {item.raw.table}/{item.raw.partition}")
            rows_in = item.original.height
            item, forgotten, cleared = without_forgotten(item, forgotten_users.__contains__)
            accepted, quarantined = split_rows(item, settings.contract_dir, now)
            write_partition(accepted, settings.contract_dir, item.raw.table, item.raw.partition)
            old_quarantine = partition_path(settings.quarantine_dir, item.raw.table, item.raw.partition)
            if quarantined.height:
                write_partition(quarantined, settings.quarantine_dir, item.raw.table, item.raw.partition)
            elif old_quarantine.exists():
                old_quarantine.unlink()
            counts = quarantined.get_column("reason").value_counts(sort=True)
            result = TableIngest(
                table=item.raw.table,
                partition=item.raw.partition,
                source=str(item.raw.path),
                rows_in=rows_in,
                accepted=accepted.height,
                quarantined=quarantined.height,
                reasons=dict(zip(counts.get_column("reason"), counts.get_column("count"), strict=True)),
                ignored_columns=item.ignored_columns,
                forgotten=forgotten,
                forgotten_cleared=cleared,
            )
            # the promise of this module
            if result.rows_in != result.accepted + result.quarantined + result.forgotten:
                raise AssertionError(f"{result.source}: rows were lost between input and output")
            results.append(result)
            bar.advance(task)
    _append_log(settings, results, now)
    return IngestReport(results)


def ingest(
    settings: Settings,
    source: Path | None = None,
    partition: str | None = None,
    now: datetime | None = None,
    progress: bool = True,
) -> IngestReport:
    """Ingest every raw file under `source` (default: the data folder's `raw/`)."""
    files = discover_raw_files(source or settings.raw_dir, partition)
    if not files:
        raise IngestRefused([f"{source or settings.raw_dir}: no raw files for any contract table"])
    return ingest_files(files, settings, now=now, progress=progress)


def _append_log(settings: Settings, results: list[TableIngest], now: datetime) -> None:
    settings.root.mkdir(parents=True, exist_ok=True)
    with (settings.root / "ingest_log.jsonl").open("a") as log:
        for result in results:
            log.write(json.dumps({"ingested_at": now.isoformat(), **asdict(result)}) + "\n")
