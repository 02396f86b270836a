"""A user's own data file for a benchmark (`--dataset FILE`): read it and parse its date column.

Dates are never guessed: a CSV column that polars reads as ISO dates or datetimes is taken as is,
and any other text needs `--date-format` (strftime, e.g. `%m/%d/%Y` for `1/13/2013`), because a
guessed format silently reads 1/12/2013 as the first of December. A value that does not parse is
one `InputError` line naming the file, the column, the data row and value, and the format expected.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from configs import InputError


def read_data_file(
    path: Path, date_column: str | None = None, date_format: str | None = None
) -> pl.DataFrame:
    """A CSV or parquet file as a frame. With `date_format`, the date column of a CSV is read as text,
    for `parse_date_column` to parse with that format."""
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        if date_format is None:
            return pl.read_csv(path, try_parse_dates=True)
        header = pl.read_csv(path, n_rows=0).columns
        overrides = {date_column: pl.String} if date_column in header else None
        return pl.read_csv(path, schema_overrides=overrides)
    except (OSError, pl.exceptions.PolarsError) as error:
        kind = "parquet" if path.suffix.lower() == ".parquet" else "CSV"
        raise InputError(f"{path}: cannot be read as {kind}: {_first_line(error)}") from None


def parse_date_column(
    frame: pl.DataFrame,
    path: Path,
    column: str,
    date_format: str | None,
    *,
    flag: str,
    dtype: type[pl.Date] | type[pl.Datetime] = pl.Date,
) -> pl.DataFrame:
    """`frame` with `column` as dates (or datetimes); `flag` names the option that chose the column.

    Temporal columns pass through; text (or integers such as 20130113) is parsed with `date_format`.
    Without a format, text is refused rather than guessed.
    """
    values = frame[column]
    if values.dtype.is_temporal():
        return frame.with_columns(values.cast(dtype))
    if values.dtype.is_numeric() and date_format is None:
        return frame  # numbers (epoch seconds) keep their order; only a format makes dates of them
    text = values.cast(pl.String)
    if date_format is None:
        first = text.drop_nulls().head(1).to_list()
        example = f" such as {first[0]!r}" if first else ""
        raise InputError(
            f"{path}: column {column!r} ({flag}) holds text{example}, not ISO dates; "
            f"give its format with --date-format, e.g. %m/%d/%Y for 1/13/2013"
        )
    try:
        parsed = text.str.strptime(dtype, date_format, strict=False)
    except pl.exceptions.PolarsError as error:
        raise InputError(
            f"{path}: --date-format {date_format!r} is not a usable strftime format ({_first_line(error)})"
        ) from None
    failed = parsed.is_null()
    if failed.any():
        row = int(failed.arg_true()[0])
        value = text[row]
        shown = "an empty value" if value is None or not value.strip() else repr(value)
        raise InputError(
            f"{path}: column {column!r} ({flag}), data row {row + 1}: {shown} does not match "
            f"--date-format {date_format!r}"
        )
    return frame.with_columns(parsed.alias(column))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
