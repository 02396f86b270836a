"""Every verb with the broken input a user really gives it: one line naming the file, column or
value and what was expected, exit 2, no traceback. Anything unexpected: one line naming the
exception type, exit 1; `--debug` shows the traceback instead.

In-process (typer's CliRunner) against a fresh, empty data folder per test, so nothing here needs
a generated marketplace, a trained model or a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()

UNKNOWN_KEY = "colour: blue\n"  # a config key that no config has
ONLINE_RETAIL_II_HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"


@pytest.fixture(autouse=True)
def _empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TRADEWIND_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "bad.yaml").write_text(UNKNOWN_KEY)
    (tmp_path / "wrong.csv").write_text("a,b\n1,2\n")
    (tmp_path / "events.csv").write_text("event_id,user\ne1,u1\n")
    (tmp_path / "dates.csv").write_text(
        ONLINE_RETAIL_II_HEADER + "489434,85048,LIGHTS,12,01.12.2009 07:45,6.95,13085,United Kingdom\n"
    )
    (tmp_path / "sales.csv").write_text("product_id,market_id,date,quantity\np1,US,1/13/2013,3\n")
    (tmp_path / "schedule.yaml").write_text("timezone: Mars/Olympus\njobs: []\n")
    (tmp_path / "a-file").write_text("not a folder\n")


# (arguments with {tmp} for the test's folder, what the one line must say); every case exits 2
CASES = {
    "ingest: missing file": (["ingest", "{tmp}/nope.csv"], "{tmp}/nope.csv: no such file or folder"),
    "ingest: CSV without a contract column": (
        ["ingest", "{tmp}/events.csv"],
        "{tmp}/events.csv: missing column 'event_ts' (table events needs event_id, event_ts,",
    ),
    "ingest: unknown data set": (
        ["ingest", "{tmp}/wrong.csv", "--dataset", "online-retail-3"],
        "--dataset: unknown data set 'online-retail-3' (known: online-retail, movielens-100k",
    ),
    "ingest: online-retail file with neither naming": (
        ["ingest", "{tmp}/wrong.csv", "--dataset", "online-retail"],
        "{tmp}/wrong.csv: not Online Retail, missing column(s) 'Invoice' (or 'InvoiceNo'), 'StockCode'",
    ),
    "ingest: online-retail dates in an unknown format": (
        ["ingest", "{tmp}/dates.csv", "--dataset", "online-retail"],
        "{tmp}/dates.csv: column 'InvoiceDate': no value can be read as a date-time such as "
        "2010-12-01 08:26:00 (first value '01.12.2009 07:45')",
    ),
    "ingest: nothing to ingest in the data folder": (["ingest"], "{tmp}/data/raw: no such file or folder"),
    "generate: config with a wrong key": (["generate", "--config", "{tmp}/bad.yaml"], "unknown key 'colour'"),
    "generate: scale zero": (["generate", "--scale", "0"], "--scale: expected a number above 0, got 0"),
    "generate: scale not a number": (
        ["generate", "--scale", "ten"],
        "tradewind generate: Invalid value for '--scale': Input should be a valid number",
    ),
    "features build: nothing ingested": (
        ["features", "build"],
        "{tmp}/data/contract: no contract tables in this data folder; run `tradewind ingest`",
    ),
    "features apply: nothing built": (
        ["features", "apply"],
        "{tmp}/data/features: no feature tables in this data folder; run `tradewind features build` first",
    ),
    "features materialize: nothing built": (
        ["features", "materialize"],
        "{tmp}/data/features: no feature tables in this data folder",
    ),
    "features build: data folder is a file": (
        ["--data-dir", "{tmp}/a-file", "features", "build"],
        "{tmp}/a-file/contract: no contract tables",
    ),
    "train: unknown model": (
        ["train", "ranker"],
        "unknown model 'ranker' (known: recommender, forecaster, bidder)",
    ),
    "train: config with a wrong key": (
        ["train", "recommender", "--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: unknown key 'colour'",
    ),
    "tune: zero trials": (["tune", "bidder", "--trials", "0"], "Invalid value for '--trials'"),
    "tune: config with a wrong key": (
        ["tune", "bidder", "--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: unknown key 'colour'",
    ),
    "retrain: unknown model": (["retrain", "ranker"], "unknown model 'ranker'"),
    "retrain: config with a wrong key": (
        ["retrain", "bidder", "--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: unknown key 'colour'",
    ),
    "monitor: no champion yet": (
        ["monitor", "recommender"],
        "no champion to monitor yet (tradewind train recommender)",
    ),
    "monitor: config with a wrong key": (
        ["monitor", "recommender", "--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: unknown key 'colour'",
    ),
    "benchmark: unknown benchmark": (
        ["benchmark", "ranker"],
        "unknown benchmark 'ranker' (known: recommender, forecaster, bidder, serving, soak, overload, "
        "feature-store)",
    ),
    "benchmark recommender: missing file": (
        ["benchmark", "recommender", "--dataset", "{tmp}/nope.csv"],
        "--dataset {tmp}/nope.csv: neither a known data set",
    ),
    "benchmark recommender: file without the user column": (
        ["benchmark", "recommender", "--dataset", "{tmp}/wrong.csv"],
        "{tmp}/wrong.csv: no column 'user_id' (--user-col); the file has: a, b",
    ),
    "benchmark forecaster: file without its columns": (
        ["benchmark", "forecaster", "--dataset", "{tmp}/wrong.csv"],
        "{tmp}/wrong.csv: no column(s)",
    ),
    "benchmark forecaster: dates not ISO": (
        ["benchmark", "forecaster", "--dataset", "{tmp}/sales.csv"],
        "{tmp}/sales.csv: column 'date' (--date) holds text such as '1/13/2013'",
    ),
    "benchmark forecaster: unknown option": (
        ["benchmark", "forecaster", "--horizn", "7"],
        "tradewind benchmark forecaster: unrecognized arguments: --horizn 7",
    ),
    "benchmark bidder: unknown source": (
        ["benchmark", "bidder", "--sources", "ipinyu"],
        "--sources: unknown ['ipinyu'] (known: synthetic, ipinyou)",
    ),
    "benchmark serving: URL without a host": (["benchmark", "serving", "--url", "localhost"], "--url"),
    "benchmark soak: negative minutes": (
        ["benchmark", "soak", "--minutes", "-1"],
        "tradewind benchmark soak: --minutes must be above 0 and at most 1440",
    ),
    "serve: config with a wrong key": (["serve", "--config", "{tmp}/bad.yaml"], "{tmp}/bad.yaml:"),
    "serve: missing config": (
        ["serve", "--config", "{tmp}/nope.yaml"],
        "{tmp}/nope.yaml: config file not found",
    ),
    "forget-user: empty id": (["forget-user", ""], "user_id: must be a non-empty id, got ''"),
    "forget-user: data folder is a file": (
        ["--data-dir", "{tmp}/a-file", "forget-user", "u1"],
        "Not a directory: '{tmp}/a-file/",
    ),
    "schedule run: config with a wrong key": (
        ["schedule", "run", "--once", "--config", "{tmp}/bad.yaml"],
        "{tmp}/bad.yaml: unknown key 'colour'",
    ),
    "schedule status: unknown time zone": (
        ["schedule", "status", "--config", "{tmp}/schedule.yaml"],
        "{tmp}/schedule.yaml: key 'timezone': Value error, unknown time zone 'Mars/Olympus'",
    ),
    "schedule crontab: missing config": (
        ["schedule", "crontab", "--config", "{tmp}/nope.yaml"],
        "{tmp}/nope.yaml: config file not found",
    ),
    "no such verb": (["forcast"], "tradewind: No such command 'forcast'."),
}


@pytest.mark.parametrize(("arguments", "message"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, arguments: list[str], message: str) -> None:
    result = runner.invoke(
        app, [argument.format(tmp=tmp_path) for argument in arguments], prog_name="tradewind"
    )

    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [result.output.strip()], result.output  # one line
    assert result.output.startswith("error: ")
    assert message.format(tmp=tmp_path) in result.output
    assert result.exit_code == 2, result.output


def test_unexpected_error_is_one_line_naming_its_type_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_build(settings: object) -> None:
        raise RuntimeError("feature table user_activity: boom\n  at step 3")

    monkeypatch.setattr("cli.data_verbs._require_tables", lambda *args: None)
    monkeypatch.setattr("features.transforms.build_feature_tables", broken_build)

    result = runner.invoke(app, ["features", "build"])

    assert result.exit_code == 1
    assert result.output == (
        "error: RuntimeError: feature table user_activity: boom; at step 3 "
        "(run with --debug for the traceback)\n"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "train", "recommender", "--config", str(tmp_path / "bad.yaml")])

    # the exception reaches the top (the command line prints its traceback), exit 1
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ConfigError"
    assert result.exc_info is not None and result.exc_info[2] is not None
    assert "unknown key 'colour'" in str(result.exception)


def test_debug_shows_the_traceback_of_a_refused_user_too() -> None:
    result = runner.invoke(app, ["--debug", "forget-user", ""])

    assert result.exit_code == 1
    assert isinstance(result.exception, ValueError)


def test_benchmark_help_still_prints_its_usage() -> None:
    result = runner.invoke(app, ["benchmark", "soak", "--help"])

    assert result.exit_code == 0
    assert result.output.startswith("usage: tradewind benchmark soak")


def test_the_installed_command_behaves_the_same(tmp_path: Path) -> None:
    """The `tradewind` script (a new process, as a user runs it), with and without --debug."""
    environment = {**os.environ, "TRADEWIND_DATA_DIR": str(tmp_path / "data")}
    tradewind = str(Path(sys.executable).with_name("tradewind"))
    missing = str(tmp_path / "nope.csv")

    plain = subprocess.run([tradewind, "ingest", missing], env=environment, capture_output=True, text=True)
    debug = subprocess.run(
        [tradewind, "--debug", "ingest", missing], env=environment, capture_output=True, text=True
    )

    assert (plain.returncode, plain.stdout, plain.stderr) == (
        2,
        "",
        f"error: {missing}: no such file or folder\n",
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"IngestRefused: {missing}: no such file or folder")
