"""The `tradewind` command: clear one-line errors, exit codes, printed counts."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.app import app
from features.contract import contract_markdown

runner = CliRunner()


@pytest.fixture(autouse=True)
def _data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEWIND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("cli.reports.console.width", 200)  # tables unwrapped, as on a wide terminal


def test_contract_markdown_is_the_document() -> None:
    result = runner.invoke(app, ["contract", "--markdown"])
    assert result.exit_code == 0
    assert result.stdout.strip() == contract_markdown().strip()


def test_refused_file_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    pl.DataFrame({"date": ["2026-01-01"], "currency": ["USD"]}).write_csv(drop / "fx_rates.csv")
    result = runner.invoke(app, ["ingest", str(drop)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "fx_rates.csv: missing column 'usd_per_unit'" in lines[0]
    assert "Traceback" not in result.output


def test_ingest_prints_counts_that_add_up(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "fx_rates.csv").write_text(
        "date,currency,usd_per_unit\n2026-01-01,USD,1\n2026-01-01,EUR,-1\n2026-01-01,USD,1\n"
    )
    result = runner.invoke(app, ["ingest", str(drop)])
    assert result.exit_code == 0, result.output
    assert "rows in 3 = accepted 1 + quarantined 2" in result.output
    assert re.search(r"fx_rates\s+.\s+zero or negative usd_per_unit\s+.\s+1", result.output)
    assert re.search(r"fx_rates\s+.\s+exact duplicate\s+.\s+1", result.output)


def test_bad_config_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEWIND_MODE", "cloud")
    result = runner.invoke(app, ["ingest"])
    assert result.exit_code == 2
    assert "key 'mode'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "ranker"], "unknown model 'ranker' (known: recommender, forecaster, bidder)"),
        (["tune", "ranker", "--trials", "2"], "unknown model 'ranker'"),
        (["benchmark", "ranker"], "unknown benchmark 'ranker' (known: recommender, forecaster, bidder"),
    ],
)
def test_unknown_model_names_the_known_ones(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("naming", ["II", "first"])
def test_ingest_online_retail_in_either_naming_balances(tmp_path: Path, naming: str) -> None:
    invoice, price, customer = (
        ("Invoice", "Price", "Customer ID") if naming == "II" else ("InvoiceNo", "UnitPrice", "CustomerID")
    )
    source = tmp_path / "online_retail.csv"
    source.write_text(
        f"{invoice},StockCode,Description,Quantity,InvoiceDate,{price},{customer},Country\n"
        "489434,85048,RED LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n"
        "489434,79323P,PINK LIGHTS,12,2009-12-01 07:45:00,6.75,13085.0,United Kingdom\n"
        "C489449,85048,RED LIGHTS,-12,2009-12-01 10:33:00,6.95,16321.0,Australia\n"
        "489436,85048,RED LIGHTS,4,2009-12-01 09:06:00,6.95,,United Kingdom\n"
    )  # fmt: skip

    result = runner.invoke(app, ["ingest", str(source), "--dataset", "online-retail"])

    assert result.exit_code == 0, result.output
    assert f"{source} is the online-retail data set: loaded 4 source rows" in result.output
    assert re.search(r"events\s+.\s+online-retail\s+.\s+4\s+.\s+2\s+.\s+2", result.output)
    summary = re.search(r"rows in ([\d,]+) = accepted ([\d,]+) \+ quarantined ([\d,]+)", result.output)
    assert summary is not None
    rows_in, accepted, quarantined = (int(group.replace(",", "")) for group in summary.groups())
    assert rows_in == accepted + quarantined
