"""`--dataset FILE` of the forecaster and recommender benchmarks: `--date-format`, and one line
naming the file, column, row and value when a date or a column is wrong."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks.data_files import parse_date_column, read_data_file
from configs import InputError


def _us_dated_sales(path: Path, days: int = 70, bad: dict[int, str] | None = None) -> Path:
    """Three series of daily units with dates written as 1/13/2013 (month/day/year, no padding)."""
    rng = np.random.default_rng(0)
    start = date(2013, 1, 1)
    dates = [start + timedelta(days=offset) for offset in range(days)]
    text = [f"{day.month}/{day.day}/{day.year}" for day in dates]
    for row, value in (bad or {}).items():
        text[row] = value
    frame = pl.concat(
        pl.DataFrame({"sku": f"S{index}", "day": text, "units": rng.poisson(4, days).astype(float)})
        for index in range(3)
    )
    frame.write_csv(path)
    return path


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_the_forecaster_reads_month_day_year_dates_with_a_date_format(tmp_path: Path) -> None:
    from benchmarks.forecaster import main

    path = _us_dated_sales(tmp_path / "sales.csv")
    out = tmp_path / "rows.json"
    arguments = ["--dataset", str(path), "--keys", "sku", "--date", "day", "--quantity", "units"]
    arguments += ["--date-format", "%m/%d/%Y", "--horizon", "7", "--models", "seasonal_naive"]
    assert main([*arguments, "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["dataset"] == "sales" and row["n"] == 3 and row["n_of"] == "series"


def test_the_forecaster_names_the_first_date_that_does_not_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.forecaster import main

    path = _us_dated_sales(tmp_path / "sales.csv", bad={4: "2013-01-05", 9: "13/13/2013"})
    arguments = ["--dataset", str(path), "--keys", "sku", "--date", "day", "--quantity", "units"]
    assert main([*arguments, "--date-format", "%m/%d/%Y", "--models", "seasonal_naive"]) == 2
    line = _error_line(capsys)
    assert line == (
        f"error: {path}: column 'day' (--date), data row 5: '2013-01-05' does not match "
        "--date-format '%m/%d/%Y'"
    )
    # without a format the text is refused, not guessed
    assert main([*arguments, "--models", "seasonal_naive"]) == 2
    line = _error_line(capsys)
    assert str(path) in line and "'day' (--date)" in line and "'1/1/2013'" in line and "--date-format" in line


def test_the_forecaster_names_a_missing_column_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.forecaster import main

    path = _us_dated_sales(tmp_path / "sales.csv")
    arguments = ["--dataset", str(path), "--keys", "sku", "--date", "when", "--quantity", "units"]
    assert main([*arguments, "--date-format", "%m/%d/%Y", "--models", "seasonal_naive"]) == 2
    assert (
        _error_line(capsys) == f"error: {path}: no column(s) ['when'] (--date); the file has: sku, day, units"
    )


def test_the_recommender_reads_a_time_column_in_a_given_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.recommender import interactions_file_case, main

    rng = np.random.default_rng(1)
    moments = [f"13/01/2013 {hour:02d}:{minute:02d}" for hour in range(24) for minute in (0, 30)]
    events = pl.DataFrame(
        {"u": rng.integers(0, 8, len(moments)), "i": rng.integers(0, 20, len(moments)), "when": moments}
    )
    path = tmp_path / "events.csv"
    events.write_csv(path)
    case = interactions_file_case(path, "u", "i", "when", date_format="%d/%m/%Y %H:%M")
    assert case.protocol == "temporal, test from 2013-01-13 21:30:00"

    events.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("13/01/2013 7:61")).otherwise("when").alias("when")
    ).write_csv(path)
    arguments = ["--dataset", str(path), "--user-col", "u", "--item-col", "i", "--time-col", "when"]
    assert main([*arguments, "--date-format", "%d/%m/%Y %H:%M"]) == 2
    assert _error_line(capsys) == (
        f"error: {path}: column 'when' (--time-col), data row 8: '13/01/2013 7:61' does not match "
        "--date-format '%d/%m/%Y %H:%M'"
    )
    assert main([*arguments[:-1], "stamp", "--date-format", "%d/%m/%Y %H:%M"]) == 2
    assert _error_line(capsys) == f"error: {path}: no column 'stamp' (--time-col); the file has: u, i, when"


def test_dates_pass_through_and_empty_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "days.csv"
    path.write_text("day,units\n2013-01-13,1\n2013-01-14,2\n")
    frame = parse_date_column(read_data_file(path), path, "day", None, flag="--date")
    assert frame["day"].to_list() == [date(2013, 1, 13), date(2013, 1, 14)]

    path.write_text("day,units\n20130113,1\n,2\n")
    with pytest.raises(InputError) as raised:
        parse_date_column(read_data_file(path, "day", "%Y%m%d"), path, "day", "%Y%m%d", flag="--date")
    assert str(raised.value) == (
        f"{path}: column 'day' (--date), data row 2: an empty value does not match --date-format '%Y%m%d'"
    )
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    with pytest.raises(InputError, match=r"broken.parquet: cannot be read as parquet: "):
        read_data_file(broken)
