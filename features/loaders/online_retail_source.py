"""Reading an Online Retail file as either release publishes it, for `online_retail.py`.

The first release (UCI "Online Retail", 2010-12 to 2011-12) names its columns InvoiceNo, StockCode,
Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country; Online Retail II (2009-12 to
2011-12, an Excel workbook with one sheet per year, or its CSV export) renames three: Invoice, Price,
Customer ID, and its CSV has InvoiceDate as text (2009-12-01 07:45:00). `read_source` takes either
naming (column by column) from parquet, CSV or Excel and returns the first release's names and types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import polars as pl

from configs import InputError

# the first release's names (this module's own); Online Retail II renamed three of them
SOURCE_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
RENAMED_IN_II = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}
SOURCE_COLUMNS_II = tuple(RENAMED_IN_II.get(name, name) for name in SOURCE_COLUMNS)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    name: (name, RENAMED_IN_II[name]) if name in RENAMED_IN_II else (name,) for name in SOURCE_COLUMNS
}
EXCEL_SUFFIXES = (".xlsx", ".xls")
SOURCE_SUFFIXES = (".parquet", ".csv", *EXCEL_SUFFIXES)
# InvoiceDate as text: Online Retail II's CSV exports, and the first release's US form (12/1/2010 8:26)
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M")
UNREADABLE = "_unreadable"  # read_source's column: why a row's value could not be read
UNREADABLE_REASON = "unreadable"  # followed by the column


def source_columns(columns: Iterable[str]) -> dict[str, str] | None:
    """{file's name: canonical name} when `columns` hold every Online Retail column under either
    release's naming (a column may come under either name), else None."""
    present = set(columns)
    found = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        name = next((alias for alias in aliases if alias in present), None)
        if name is None:
            return None
        found[name] = canonical
    return found


def _missing_columns(where: str, columns: Sequence[str]) -> InputError:
    missing = [
        f"{RENAMED_IN_II[name]!r} (or {name!r})" if name in RENAMED_IN_II else repr(name)
        for name, aliases in COLUMN_ALIASES.items()
        if not set(aliases) & set(columns)
    ]
    return InputError(
        f"{where}: not Online Retail, missing column(s) {', '.join(missing)}; "
        f"the file has: {', '.join(columns) or 'no columns'}"
    )


def header_columns(path: Path) -> list[str]:
    """The column names of a parquet or CSV file, without reading its rows ([] when unreadable)."""
    try:
        if path.suffix.lower() == ".parquet":
            return list(pl.read_parquet_schema(path))
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, n_rows=0, infer_schema=False, encoding="utf8-lossy").columns
    except (OSError, pl.exceptions.PolarsError):
        pass
    return []


def find_source(source: Path) -> Path:
    """The file to read: `source` itself, or the first file in a folder (by name; parquet, CSV or
    Excel) that has Online Retail's columns under either naming."""
    if source.is_file():
        return source
    if source.is_dir():
        candidates = sorted(path for path in source.iterdir() if path.suffix.lower() in SOURCE_SUFFIXES)
        for candidate in candidates:
            if candidate.suffix.lower() in EXCEL_SUFFIXES or source_columns(header_columns(candidate)):
                return candidate
        raise FileNotFoundError(
            f"{source}: no {'/'.join(SOURCE_SUFFIXES)} file with the Online Retail columns in this folder"
        )
    raise FileNotFoundError(f"{source}: no such file or folder")


def _read_frames(path: Path) -> list[tuple[str, pl.DataFrame]]:
    """(where, rows) per sheet of an Excel file (Online Retail II has one per year), else one."""
    suffix = path.suffix.lower()
    if suffix not in SOURCE_SUFFIXES:
        raise InputError(f"{path}: expected a {', '.join(SOURCE_SUFFIXES)} file of Online Retail")
    try:
        if suffix == ".parquet":
            return [(str(path), pl.read_parquet(path))]
        if suffix == ".csv":  # as text: the types are decided below, with one line per unreadable column
            return [(str(path), pl.read_csv(path, infer_schema=False, encoding="utf8-lossy"))]
        sheets = pl.read_excel(path, sheet_id=0)
    except ImportError as error:
        raise InputError(
            f"{path}: reading Excel needs a package that is not installed ({_first_line(error)}); "
            "save each sheet as CSV and ingest those"
        ) from None
    except (OSError, pl.exceptions.PolarsError) as error:
        raise InputError(f"{path}: cannot be read as {suffix[1:]}: {_first_line(error)}") from None
    return [(f"{path} (sheet {sheet!r})", frame) for sheet, frame in sheets.items()]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _as_text(column: pl.Series) -> pl.Series:
    """Ids as text; a float id (Excel's 536365.0) loses its `.0`."""
    if column.dtype.is_float():
        whole = column == column.round(0)
        column = column.set(~whole.fill_null(True), None).cast(pl.Int64)
    return column.cast(pl.String).str.strip_chars()


def _as_number(column: pl.Series, dtype: pl.DataType) -> pl.Series:
    if column.dtype == pl.String:
        column = column.str.strip_chars()
    number = column.cast(pl.Float64, strict=False)
    if dtype.is_integer():  # a fractional quantity is unreadable, not truncated
        number = number.set(~(number == number.round(0)).fill_null(True), None)
    return number.cast(dtype, strict=False)


def _as_datetime(column: pl.Series) -> pl.Series:
    if isinstance(column.dtype, pl.Datetime):
        return column.dt.cast_time_unit("us")
    if column.dtype == pl.Date:
        return column.cast(pl.Datetime("us"))
    if column.dtype != pl.String:
        return pl.Series(column.name, [None] * column.len(), pl.Datetime("us"))
    text = column.str.strip_chars()
    candidates = [text.str.to_datetime(fmt, strict=False, time_unit="us") for fmt in DATE_FORMATS]
    return pl.select(pl.coalesce(candidates)).to_series().alias(column.name)


CONVERSIONS: dict[str, Callable[[pl.Series], pl.Series]] = {
    "InvoiceNo": _as_text,
    "StockCode": _as_text,
    "Description": lambda column: column.cast(pl.String),
    "Quantity": lambda column: _as_number(column, pl.Int64),
    "InvoiceDate": _as_datetime,
    "UnitPrice": lambda column: _as_number(column, pl.Float64),
    "Country": lambda column: column.cast(pl.String),
}
EXPECTED = {
    "Quantity": "a whole number",
    "InvoiceDate": "a date-time such as 2010-12-01 08:26:00",
    "UnitPrice": "a number",
}


def _typed(where: str, frame: pl.DataFrame) -> pl.DataFrame:
    names = source_columns(frame.columns)
    if names is None:
        raise _missing_columns(where, frame.columns)
    typed, unreadable = {}, []
    for name, canonical in names.items():
        original = frame.get_column(name)
        if canonical not in CONVERSIONS:  # CustomerID: numbers or text, `_customer_id` takes both
            typed[canonical] = original
            continue
        converted = CONVERSIONS[canonical](original).alias(canonical)
        typed[canonical] = converted
        if canonical not in EXPECTED:
            continue
        present = original.is_not_null()
        if original.dtype == pl.String:
            present &= original.str.strip_chars() != ""  # an empty CSV cell is a missing value
        lost = present & converted.is_null()
        if lost.any() and lost.sum() == present.sum():
            raise InputError(
                f"{where}: column {name!r}: no value can be read as {EXPECTED[canonical]} "
                f"(first value {original.filter(present)[0]!r})"
            )
        unreadable.append(pl.when(lost).then(pl.lit(f"{UNREADABLE_REASON} {canonical}")))
    return pl.DataFrame(typed).select(
        *SOURCE_COLUMNS, pl.coalesce(unreadable).cast(pl.String).alias(UNREADABLE)
    )


def read_source(path: Path) -> pl.DataFrame:
    """The rows of an Online Retail file (parquet, CSV, or Excel with one sheet per year, stacked)
    under the first release's column names (`SOURCE_COLUMNS`) whichever release's naming it uses,
    typed: ids and text as strings, Quantity an integer, InvoiceDate a naive datetime (read from
    text in one of `DATE_FORMATS`), UnitPrice a float; CustomerID as the file has it. Column
    `UNREADABLE` holds the reason for a row with a value that cannot be read (the loader flags it);
    a column where no value can be read, or a missing column, is an InputError naming them."""
    parts = [_typed(where, frame) for where, frame in _read_frames(path)]
    return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
